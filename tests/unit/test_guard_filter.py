"""The worker's own seccomp program, run on an interpreter of classic BPF.

The program is what the supervisor installs before any call runs
(:mod:`sandboxed.worker.guard`); here each rule is checked against the
arguments an attacker would pass, and against the ones ordinary code passes.
The filter itself is attacked from inside real units in tests/security/.
"""

from __future__ import annotations

import struct

import pytest

from sandboxed.worker import guard

X32 = guard.X32_SYSCALL_BIT


def run(machine: str, nr: int, args: list[int], arch: int | None = None) -> str:
    """What the filter answers for one system call: "allow" or "deny"."""
    native, _ = guard._ARCH[machine]
    code = guard._filter(native, guard._ARCH[machine][1])
    prog = [struct.unpack("=HBBI", code[i : i + 8]) for i in range(0, len(code), 8)]
    six = [a & 0xFFFFFFFFFFFFFFFF for a in ([*args, 0, 0, 0, 0, 0, 0])[:6]]
    data = struct.pack("=iIQ6Q", nr, native if arch is None else arch, 0, *six)
    pc = acc = 0
    for _ in range(len(prog) + 1):
        op, jt, jf, k = prog[pc]
        if op == 0x20:  # LD W ABS
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif op == 0x15:  # JEQ
            pc += 1 + (jt if acc == k else jf)
        elif op == 0x35:  # JGE
            pc += 1 + (jt if acc >= k else jf)
        elif op == 0x45:  # JSET
            pc += 1 + (jt if acc & k else jf)
        elif op == 0x05:  # JA
            pc += 1 + k
        elif op == 0x06:  # RET
            return "allow" if k == guard.SECCOMP_RET_ALLOW else "deny"
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("the program does not end")


CASES = [
    # (call, arguments, answer)
    ("kill", [1, 9], "deny"),  # the manager
    ("kill", [-1, 9], "deny"),  # everyone
    ("kill", [-4242, 9], "deny"),  # a process group
    ("kill", [4242, 9], "allow"),  # a process of our own (the kernel checks the rest)
    ("tgkill", [1, 1, 9], "deny"),
    ("tgkill", [4242, 4243, 9], "allow"),
    ("rt_sigqueueinfo", [1, 9, 0], "deny"),
    ("pidfd_send_signal", [3, 9, 0, 0], "deny"),
    ("prlimit64", [0, 7, 0, 0], "allow"),  # our own limits (setrlimit)
    ("prlimit64", [1, 7, 0, 0], "deny"),  # the manager's descriptors
    ("prlimit64", [4242, 7, 0, 0], "deny"),
    ("fcntl", [3, guard.F_SETOWN, 1], "deny"),  # SIGIO to the manager
    ("fcntl", [3, guard.F_SETOWN_EX, 1], "deny"),
    ("fcntl", [3, 4, 0o4000], "allow"),  # F_SETFL O_NONBLOCK
    ("ioctl", [3, guard.FIOSETOWN, 1], "deny"),
    ("ioctl", [3, guard.SIOCSPGRP, 1], "deny"),
    ("ioctl", [1, 0x5401, 0], "allow"),  # TCGETS
    ("ioprio_set", [1, 0, 7], "allow"),  # our own I/O priority
    ("ioprio_set", [1, 1, 7], "deny"),  # the manager's
    ("ioprio_set", [3, 0, 7], "deny"),  # every process of our uid
    ("ioprio_set", [2, 0, 7], "deny"),  # our process group
    ("migrate_pages", [0, 2, 0, 0], "allow"),
    ("migrate_pages", [1, 2, 0, 0], "deny"),
    ("move_pages", [4242, 1, 0, 0, 0, 0], "deny"),
    ("process_madvise", [3, 0, 1, 0, 0], "deny"),
    ("process_mrelease", [3, 0], "deny"),
]


@pytest.mark.parametrize("machine", sorted(guard._ARCH))
@pytest.mark.parametrize(("call", "args", "answer"), CASES, ids=[f"{c}{a}" for c, a, _ in CASES])
def test_the_filter_refuses_what_reaches_outside_and_allows_the_rest(
    machine: str, call: str, args: list[int], answer: str
) -> None:
    assert run(machine, guard._ARCH[machine][1][call], args) == answer


@pytest.mark.parametrize("machine", sorted(guard._ARCH))
def test_calls_the_filter_does_not_name_are_allowed(machine: str) -> None:
    numbers = set(guard._ARCH[machine][1].values())
    others = [nr for nr in range(0, 460) if nr not in numbers]
    assert {run(machine, nr, [1, 2, 3]) for nr in others} == {"allow"}


def test_a_foreign_architecture_and_x32_numbers_are_refused() -> None:
    kill = guard._ARCH["x86_64"][1]["kill"]
    assert run("x86_64", kill, [4242, 9], arch=0x40000003) == "deny"  # i386
    assert run("x86_64", kill | X32, [1, 9]) == "deny"
    assert run("x86_64", 0 | X32, [0, 0, 0]) == "deny"
