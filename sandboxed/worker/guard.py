"""What the supervisor checks and locks down before any call's code runs.

Two jobs, both cheap enough for every cold start:

- :func:`verify_namespaces`: systemd proceeds without a namespace on some errors
  (``PrivateNetwork=``: systemd PRs #14970, #28142; a user manager ignores it
  without ``PrivateUsers=``). The caller sends the inode numbers of its own
  namespaces and the kinds the unit promised; a promised namespace that is the
  caller's (or, for the network, one with any interface besides ``lo``) fails
  the start.
- :func:`forbid_outside_signals`: a seccomp filter of our own, stacked on
  systemd's, that refuses signals to PID 1 (the manager: ``SIGRTMIN+4`` powers
  it off), to every process at once (``kill(-1)``) and to process groups, and
  ``pidfd_send_signal()``. systemd's ``SystemCallFilter=`` cannot look at
  arguments, and root (or a shared ``User=``) passes the kernel's signal
  permission check for every process of the same uid.
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
_RET_K = 0x06

#: AUDIT_ARCH_* and the numbers of the signal-sending calls, per machine.
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
        },
    ),
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
    prog: list[tuple[int, int, int, int]] = []

    def emit(code: int, jt: int, jf: int, k: int) -> None:
        prog.append((code, jt, jf, k))

    # [0] arch must be native (compat system calls have other numbers).
    emit(_LD_W_ABS, 0, 0, 4)
    emit(_JEQ_K, 1, 0, arch)
    emit(_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
    emit(_LD_W_ABS, 0, 0, 0)  # nr
    by_pid = [
        numbers[n] for n in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
    ]
    # Layout after the nr load: for each pid-taking call a JEQ to the check block,
    # then a JEQ for pidfd_send_signal to deny, then allow; the check block last.
    n = len(by_pid)
    for i, nr in enumerate(by_pid):
        # Jump over the JEQs left, the pidfd JEQ and its deny, and the allow.
        emit(_JEQ_K, (n - 1 - i) + 3, 0, nr)
    emit(_JEQ_K, 0, 1, numbers["pidfd_send_signal"])
    emit(_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
    emit(_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    # check block: low 32 bits of args[0] (little-endian) is the pid / tgid
    emit(_LD_W_ABS, 0, 0, 16)
    emit(_JEQ_K, 2, 0, 1)  # pid 1: the manager (or the namespace's init)
    emit(_JSET_K, 1, 0, 0x80000000)  # negative: -1 (everyone) or a process group
    emit(_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    emit(_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
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
