"""What the supervisor checks and locks down before any call's code runs.

Two jobs, both cheap enough for every cold start:

- :func:`verify_namespaces`: systemd proceeds without a namespace on some errors
  (``PrivateNetwork=``: systemd PRs #14970, #28142; a user manager ignores it
  without ``PrivateUsers=``). The caller sends the inode numbers of its own
  namespaces and the kinds the unit promised; a promised namespace that is the
  caller's (or, for the network, one with any interface besides ``lo``) fails
  the start.
- :func:`forbid_outside_signals`: a seccomp filter of our own, stacked on
  systemd's, that refuses what reaches other processes by PID (:data:`RULES`):
  signals to PID 1 (the manager: ``SIGRTMIN+4`` powers it off), to every
  process at once (``kill(-1)``) and to process groups, ``pidfd_send_signal()``,
  SIGIO owners (``F_SETOWN``...), another process's limits, I/O priority and
  memory placement. systemd's ``SystemCallFilter=`` cannot look at arguments,
  and root (or a shared ``User=``) passes the kernel's permission checks for
  every process of the same uid.
"""

from __future__ import annotations

import os
import struct

from sandboxed.worker._util import suppress

#: Namespace kinds a unit can be promised, as the names in /proc/self/ns.
NAMESPACE_KINDS = ("net", "user", "ipc", "mnt", "uts", "cgroup")

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1

# BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_JGE_K = 0x35
_RET_K = 0x06

#: AUDIT_ARCH_* and the numbers of the system calls the filter looks at, per machine.
_ARCH = {
    "x86_64": (
        0xC000003E,
        {
            "kill": 62,
            "tkill": 200,
            "tgkill": 234,
            "rt_sigqueueinfo": 129,
            "rt_tgsigqueueinfo": 297,
            "pidfd_send_signal": 424,
            "prlimit64": 302,
            "fcntl": 72,
            "ioctl": 16,
            "ioprio_set": 251,
            "migrate_pages": 256,
            "move_pages": 279,
            "process_madvise": 440,
            "process_mrelease": 448,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "kill": 129,
            "tkill": 130,
            "tgkill": 131,
            "rt_sigqueueinfo": 138,
            "rt_tgsigqueueinfo": 240,
            "pidfd_send_signal": 424,
            "prlimit64": 261,
            "fcntl": 25,
            "ioctl": 29,
            "ioprio_set": 30,
            "migrate_pages": 238,
            "move_pages": 239,
            "process_madvise": 440,
            "process_mrelease": 448,
        },
    ),
}

# fcntl() and ioctl() commands that make the kernel signal a process of our choosing
# when a descriptor becomes ready (SIGIO, or any signal with F_SETSIG): root passes
# the kernel's permission check for every root process, the manager included.
F_SETOWN = 8
F_SETOWN_EX = 15
FIOSETOWN = 0x8901
SIOCSPGRP = 0x8902
X32_SYSCALL_BIT = 0x40000000

#: What the filter refuses, by system call: ``None`` refuses every call of it, otherwise
#: a rule ``(argument index, test, values)``: ``"pid"`` refuses PID 1 and negative
#: values (every process, process groups), ``"self"`` refuses anything but 0 (this
#: process), ``"in"`` refuses the listed values.
RULES: dict[str, list[tuple[int, str, tuple[int, ...]]] | None] = {
    "kill": [(0, "pid", ())],
    "tkill": [(0, "pid", ())],
    "tgkill": [(0, "pid", ())],
    "rt_sigqueueinfo": [(0, "pid", ())],
    "rt_tgsigqueueinfo": [(0, "pid", ())],
    "pidfd_send_signal": None,
    # Another process's limits (the manager's descriptors or tasks, for good).
    "prlimit64": [(0, "self", ())],
    "fcntl": [(1, "in", (F_SETOWN, F_SETOWN_EX))],
    "ioctl": [(1, "in", (FIOSETOWN, SIOCSPGRP))],
    # Another process's, a process group's or a whole uid's I/O priority.
    "ioprio_set": [(0, "in", (2, 3)), (1, "self", ())],
    # Moving another process's memory between NUMA nodes; advising or reaping it.
    "migrate_pages": [(0, "self", ())],
    "move_pages": [(0, "self", ())],
    "process_madvise": None,
    "process_mrelease": None,
}


class GuardError(RuntimeError):
    """The unit is not what it was promised to be; the supervisor refuses to serve."""


def namespace_inodes() -> dict[str, int]:
    """This process's namespace inode numbers by kind (missing kinds left out)."""
    out = {}
    for kind in NAMESPACE_KINDS:
        with suppress(OSError):
            out[kind] = os.stat(f"/proc/self/ns/{kind}").st_ino
    return out


def verify_namespaces(promised: str, callers: dict[str, int]) -> None:
    """Raise GuardError if a namespace kind in ``promised`` (comma-separated) is not ours.

    ``callers`` holds the caller's inode numbers for those kinds.
    """
    mine = namespace_inodes()
    for kind in filter(None, promised.split(",")):
        if kind not in mine:
            raise GuardError(
                f"the unit was promised a private {kind} namespace, "
                f"and /proc/self/ns/{kind} cannot be read"
            )
        if callers.get(kind) == mine[kind]:
            raise GuardError(
                f"the unit was promised a private {kind} namespace, but it "
                "runs in the caller's: the manager did not set it up"
            )
    if "net" in promised.split(","):
        names = _interfaces()
        if names != ["lo"]:
            raise GuardError(
                "the unit was promised a private network namespace, but it "
                f"sees the interfaces {', '.join(names)}"
            )


def _interfaces() -> list[str]:
    """The network interfaces of this process's network namespace (no socket needed:
    a unit may have no address family but AF_UNIX)."""
    with open("/proc/self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def _filter(arch: int, numbers: dict[str, int]) -> bytes:
    """The classic-BPF program of :data:`RULES` for one machine."""
    deny = (_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
    allow = (_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    # Each rule's block: load the argument's low 32 bits (little-endian), test, and
    # return; the dispatch jumps to the block of its system call.
    blocks: list[list[tuple[int, int, int, int]]] = []
    for rules in RULES.values():
        block: list[tuple[int, int, int, int]] = []
        for index, test, values in rules or []:
            block.append((_LD_W_ABS, 0, 0, 16 + 8 * index))
            if test == "pid":
                # pid 1: the manager (or the namespace's init); negative: -1 or a group
                block += [(_JEQ_K, 1, 0, 1), (_JSET_K, 0, 1, 0x80000000), deny]
            elif test == "self":
                block += [(_JEQ_K, 1, 0, 0), deny]
            else:
                for n, value in enumerate(values):
                    # a match jumps over the remaining tests and the JA, onto the deny
                    block.append((_JEQ_K, len(values) - n, 0, value))
                block += [(0x05, 0, 0, 1), deny]  # JA over the deny
        block.append(allow if rules else deny)
        blocks.append(block)
    head = [
        (_LD_W_ABS, 0, 0, 4),  # arch must be native (compat calls have other numbers)
        (_JEQ_K, 1, 0, arch),
        deny,
        (_LD_W_ABS, 0, 0, 0),  # nr
        (_JGE_K, 0, 1, X32_SYSCALL_BIT),  # x32 calls: the same arch, other numbers
        deny,
    ]
    dispatch_len = len(RULES) + 1  # one JEQ per call, then allow
    prog = list(head)
    offset = 0  # of each block from the end of the dispatch
    for n, (name, block) in enumerate(zip(RULES, blocks, strict=True)):
        jump = (dispatch_len - 1 - n - 1) + 1 + offset
        if jump > 255:
            raise GuardError("the system call filter outgrew its jumps")
        prog.append((_JEQ_K, jump, 0, numbers[name]))
        offset += len(block)
    prog.append(allow)
    for block in blocks:
        prog += block
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def lock_down(spec: str) -> None:
    """Apply the guard the caller asked for in ``spec`` (the unit's command line), e.g.
    ``signals;ns=net,user,mnt;net=4026531840;user=4026531837;mnt=4026531841``.
    An empty spec (``containment=False``) does nothing. Raises GuardError."""
    fields = [f for f in spec.split(";") if f]
    if not fields:
        return
    values = dict(f.partition("=")[::2] for f in fields)
    callers = {k: int(v) for k, v in values.items() if k in NAMESPACE_KINDS and v.isdigit()}
    verify_namespaces(values.get("ns", ""), callers)
    if "signals" in values:
        forbid_outside_signals()


def forbid_outside_signals() -> None:
    """Install the signal filter on this process (inherited by every child)."""
    machine = os.uname().machine
    if machine not in _ARCH:
        raise GuardError(f"no signal filter for machine {machine!r}")
    arch, numbers = _ARCH[machine]
    code = _filter(arch, numbers)
    import ctypes  # only here: a unit without the guard never pays for it

    buf = ctypes.create_string_buffer(code, len(code))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise GuardError(f"prctl(NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise GuardError(f"cannot install the signal filter: {os.strerror(ctypes.get_errno())}")
