"""Hardened against code that wants privileges, kernel interfaces or other processes.

Each refused system call is also made from a sandbox without the filter
(``nobody``, no other restriction) to show that the refusal comes from
Hardened and not from the kernel or this host's own container policy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from escape_kit import OK, attempt, in_sandbox

from sandboxed import AsUser, Hardened

pytestmark = pytest.mark.systemd

HARDENED = in_sandbox(Hardened)
NOBODY = in_sandbox(AsUser("nobody"))
#: The controls: nothing but the user, not even the containment baseline every sandbox gets.
BARE_NOBODY = in_sandbox(AsUser("nobody"), containment=False)

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
PTRACE_ATTACH = 16
# x86-64 and aarch64 numbers of the calls libc has no wrapper for.
_SYSCALLS = {
    "x86_64": {"kexec_load": 246, "bpf": 321, "kexec_file_load": 320},
    "aarch64": {"kexec_load": 104, "bpf": 280, "kexec_file_load": 294},
}


def _check(r: int) -> None:
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _syscall(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    nr = _SYSCALLS[os.uname().machine][name]
    _check(libc.syscall(nr, *[ctypes.c_long(a) for a in args]))


def _libc(name: str, *args: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    _check(getattr(libc, name)(*args))


def _ptrace_own_child() -> None:
    # The child runs a program: a forked worker's child is non-dumpable (calls cannot read
    # each other's memory), a program it runs is not. The pipe closes on its exec.
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.execv("/bin/sleep", ["sleep", "5"])
    os.close(w)
    os.read(r, 1)
    os.close(r)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        _check(libc.ptrace(PTRACE_ATTACH, pid, None, None))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _in_child(action: Any) -> str:
    """``attempt(action)`` in a forked child (single-threaded, as some calls require)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, attempt(action).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    return outcome


def privileged_calls() -> dict[str, str]:
    union = bytes(128)  # a zeroed bpf_attr: BPF_MAP_CREATE with nothing in it
    return {
        "mount": attempt(lambda: _libc("mount", b"tmpfs", b"/tmp", b"tmpfs", 0, None)),
        # unshare(CLONE_NEWUSER) needs a single-threaded caller: a fresh child is one.
        "unshare(user)": _in_child(lambda: _libc("unshare", CLONE_NEWUSER)),
        "unshare(user|mnt)": _in_child(lambda: _libc("unshare", CLONE_NEWUSER | CLONE_NEWNS)),
        "unshare(user|net)": _in_child(lambda: _libc("unshare", CLONE_NEWUSER | CLONE_NEWNET)),
        "ptrace": attempt(_ptrace_own_child),
        "bpf": attempt(
            lambda: _syscall("bpf", 0, ctypes.addressof(ctypes.create_string_buffer(union)), 128)
        ),
        "kexec_load": attempt(lambda: _syscall("kexec_load", 0, 0, 0, 0)),
        "kexec_file_load": attempt(lambda: _syscall("kexec_file_load", -1, -1, 0, 0, 0)),
        "chroot": attempt(lambda: os.chroot("/")),
        "swapoff": attempt(lambda: _libc("swapoff", b"/nonexistent")),
        "setns": attempt(lambda: _libc("setns", os.open("/proc/self/ns/net", os.O_RDONLY), 0)),
    }


def status() -> dict[str, str]:
    lines = Path("/proc/self/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def visible_processes() -> dict[int, int]:
    """PID -> owner uid of every process this sandbox can see in /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(FileNotFoundError):  # it exited meanwhile
                out[int(name)] = os.stat(f"/proc/{name}").st_uid
    return out


def ordinary_python() -> dict[str, Any]:
    import asyncio
    import hashlib
    import json
    import math
    import multiprocessing
    import re
    import threading

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lock = multiprocessing.Lock()  # a POSIX semaphore in /dev/shm
    with lock:
        pass

    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    return {
        "json": json.loads(json.dumps({"a": [1, 2.5, None]})),
        "re": re.findall(r"\d+", "a1b22c333"),
        "math": math.isclose(math.sqrt(2) ** 2, 2),
        "hashlib": hashlib.sha256(b"abc").hexdigest()[:8],
        "asyncio": asyncio.run(twice(21)),
        "threading": sorted(results),
        "tmp": Path("/tmp/scratch").write_text("x"),
    }


def test_ordinary_python_code_runs_hardened() -> None:
    assert HARDENED(ordinary_python) == {
        "json": {"a": [1, 2.5, None]},
        "re": ["1", "22", "333"],
        "math": True,
        "hashlib": "ba7816bf",
        "asyncio": 42,
        "threading": [0, 1, 4, 9],
        "tmp": 1,
    }


def test_it_has_no_capability_and_no_way_to_gain_one() -> None:
    s = HARDENED(status)
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(s[name], 16) == 0, name
    assert s["NoNewPrivs"] == "1"
    assert s["Seccomp"] == "2"  # a filter is installed


def test_privileged_system_calls_are_refused_by_the_filter() -> None:
    outcomes = HARDENED(privileged_calls)
    assert {k: v for k, v in outcomes.items() if v == OK} == {}
    # Refused by seccomp (SystemCallErrorNumber=EPERM), before any other check.
    assert set(outcomes.values()) == {"PermissionError EPERM"}


def test_without_the_filter_an_unprivileged_user_may_unshare_and_ptrace() -> None:
    # The control for the test above: these are refused by Hardened, not by the host.
    outcomes = BARE_NOBODY(privileged_calls)
    assert outcomes["ptrace"] == OK
    assert outcomes["unshare(user|net)"] == OK
    # Without the filter these reach the kernel, which answers otherwise than EPERM.
    assert outcomes["bpf"] != "PermissionError EPERM"
    assert outcomes["kexec_load"] != "PermissionError EPERM"


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError as e:
        return type(e).__name__


def test_other_processes_are_invisible() -> None:
    seen = HARDENED(visible_processes)
    uid = HARDENED(os.getuid)
    assert seen, "it sees at least itself"
    assert set(seen.values()) == {uid}
    # The manager is invisible: hidden (ProtectProc=), or not in its PID namespace at all
    # (PrivatePIDs= on systemd 257+, where PID 1 is the sandbox's own supervisor).
    assert 1 not in seen or HARDENED(process_name, 1) != "systemd"
    assert "systemd" not in {HARDENED(process_name, pid) for pid in seen}
    # Without ProtectProc= the same probe sees root's processes.
    assert 0 in BARE_NOBODY(visible_processes).values()


def _shared_memory(name: str) -> dict[str, Any]:
    wrote = attempt(lambda: Path(f"/dev/shm/{name}-from-sandbox").write_text("x"))
    return {"wrote": wrote, "listing": sorted(os.listdir("/dev/shm"))}


def test_dev_shm_is_private() -> None:
    name = f"sandboxed-escape-{secrets.token_hex(4)}"
    planted = Path(f"/dev/shm/{name}-from-host")
    planted.write_text("host")
    planted.chmod(0o644)
    try:
        seen = HARDENED(_shared_memory, name)
        assert seen["wrote"] == OK  # it may use shared memory of its own
        assert planted.name not in seen["listing"]
        assert not Path(f"/dev/shm/{name}-from-sandbox").exists()
    finally:
        planted.unlink()
        Path(f"/dev/shm/{name}-from-sandbox").unlink(missing_ok=True)


def _write_in(directory: str) -> str:
    return attempt(lambda: Path(directory, "escape").write_text("x"))


def _listing(directory: str) -> list[str] | str:
    try:
        return sorted(os.listdir(directory))
    except PermissionError:
        return "not listable"


def test_home_directories_look_empty_and_nothing_written_there_reaches_them() -> None:
    assert os.listdir("/home"), "the host has a home directory to hide"
    assert HARDENED(os.listdir, "/home") == []
    # /root shows at most the read-only binds of the interpreter's own directories
    # (systemd 257 makes it a 0700 tmpfs, which the unit's user cannot list at all).
    ours = (os.path.realpath(sys.executable), sys.base_prefix, sys.prefix, *sys.path)
    needed = {
        os.path.realpath(p).split("/")[2] for p in ours if os.path.realpath(p).startswith("/root/")
    }
    in_root = HARDENED(_listing, "/root")
    assert in_root == "not listable" or set(in_root) <= needed, in_root
    # On systemd 252 and 254 these tmpfs are writable (mode 1777) despite systemd.exec(5)'s
    # "read-only" (so with plain systemd-run, too), on 257 they are read-only: what is
    # written there, if anything, is the unit's own and never reaches the host.
    HARDENED(_write_in, "/root")
    HARDENED(_write_in, "/home")
    assert not Path("/root/escape").exists()
    assert not Path("/home/escape").exists()
