"""Red team: ways out of the unit that the containment baseline's matrix does not list.

Each attack runs from inside a real sandbox, with the public API, as root (the
default user), as ``User=nobody`` and as a dynamic user, and has a control: the
same probe from a sandbox built with ``containment=False`` works, so that a
refusal is known to come from the sandbox. What broke is marked
``xfail(strict=True)`` with the finding: the test asserts the promise, fails
today, and turns red (XPASS) the day the hole is closed, so that the mark is
removed with the fix.

Every probe is reversible: a resource limit is lowered by one and restored, an
OOM score raised by one and restored, the manager's log level set to ``debug``
and restored, a shared-memory segment removed afterwards.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from escape_kit import OK, attempt, in_sandbox

from sandboxed import Hardened, NoNetwork, ReadOnly
from sandboxed.systemd.bus import ManagerClient

pytestmark = pytest.mark.systemd

CONTAINED = NoNetwork | ReadOnly

#: (id, presets, directives) of the attackers: the strongest combinations per user.
ROOT_RO = ("root-ReadOnly", (ReadOnly,), {})
ROOT_NNRO = ("root-NoNetwork|ReadOnly", (CONTAINED,), {})
ROOT_HARDENED = ("root-Hardened", (Hardened,), {"DynamicUser": False})
NOBODY = ("nobody-NoNetwork|ReadOnly", (CONTAINED,), {"User": "nobody"})
DYNAMIC = ("dynamic-Hardened", (Hardened,), {})


def attacker(spec: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Any:
    _, presets, directives = spec
    return in_sandbox(*presets, **directives)


def uncontained() -> Any:
    return in_sandbox(containment=False, PrivateTmp=True)


def broken(spec: tuple[str, tuple[Any, ...], dict[str, Any]], finding: str) -> Any:
    return pytest.param(
        spec,
        id=spec[0],
        marks=pytest.mark.xfail(strict=True, reason=f"red team finding: {finding}"),
    )


def held(spec: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Any:
    return pytest.param(spec, id=spec[0])


# -- 1. signals to the manager through SIGIO (F_SETOWN), around the worker's kill() filter ----


def sigio(pid: int, sig: int) -> str:
    """Have the kernel send ``sig`` to ``pid``: a pipe owned by ``pid`` (F_SETOWN) with
    O_ASYNC and F_SETSIG; a write makes it readable, which signals the owner. No kill()
    family call is made, so the worker's argument filter never sees it."""
    import fcntl

    def send() -> None:
        r, w = os.pipe()
        try:
            fcntl.fcntl(r, fcntl.F_SETOWN, pid)
            fcntl.fcntl(r, 10, sig)  # F_SETSIG
            fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
            os.write(w, b"x")
        finally:
            os.close(r)
            os.close(w)

    return attempt(send)


def _log_level_after(client: ManagerClient, want: str, wait: float = 3.0) -> str:
    """The manager's LogLevel once it is ``want``, or after ``wait`` seconds."""
    end = time.monotonic() + wait
    level = str(client.manager_property("LogLevel"))
    while level != want and time.monotonic() < end:
        time.sleep(0.05)
        level = str(client.manager_property("LogLevel"))
    return level


@pytest.fixture
def manager_log_level(client: ManagerClient) -> Iterator[ManagerClient]:
    """The manager at its configured log level before and after (SIGRTMIN+23 restores it)."""
    assert str(client.manager_property("LogLevel")) != "debug"
    yield client
    if str(client.manager_property("LogLevel")) == "debug":
        uncontained()(sigio, 1, signal.SIGRTMIN + 23)
        _log_level_after(client, "info")


#: Every sandbox of the matrix, each expected to hold.
EVERY_SPEC_HELD = [held(s) for s in (ROOT_RO, ROOT_NNRO, ROOT_HARDENED, NOBODY, DYNAMIC)]


@pytest.mark.parametrize("spec", EVERY_SPEC_HELD)
def test_redteam_the_manager_cannot_be_signalled_through_sigio(
    spec: Any, manager_log_level: ManagerClient
) -> None:
    # SIGRTMIN+22 sets the manager's log level to debug (a harmless, visible witness);
    # SIGRTMIN+4 would power it off, and every sandbox with it.
    attacker(spec)(sigio, 1, signal.SIGRTMIN + 22)
    assert _log_level_after(manager_log_level, "debug", wait=2.0) != "debug"


def test_redteam_control_sigio_signals_the_manager_without_containment(
    manager_log_level: ManagerClient,
) -> None:
    assert uncontained()(sigio, 1, signal.SIGRTMIN + 22) == OK
    assert _log_level_after(manager_log_level, "debug") == "debug"


# -- 2. the supervisor's memory: a call plants state that every later (fresh) worker forks ----


def plant_in_supervisor(token: bytes) -> str:
    """Overwrite, in the supervisor (our parent, never running user code), the first
    bytes of a string every worker forked from it inherits: framing's module docstring."""
    import sys

    def write() -> None:
        doc = sys.modules["sandboxed.wire.framing"].__doc__
        assert doc is not None and len(doc) > len(token)
        addr = id(doc) + sys.getsizeof("") - 1  # compact ASCII: data follows the header
        fd = os.open(f"/proc/{os.getppid()}/mem", os.O_RDWR)
        try:
            os.pwrite(fd, token, addr)
        finally:
            os.close(fd)

    return attempt(write)


def guard_doc_head(n: int) -> str:
    import sys

    return (sys.modules["sandboxed.wire.framing"].__doc__ or "")[:n]


def _plant_then_look(fn: Any) -> tuple[str, str, str]:
    """(before, the plant's outcome, what the next fresh worker sees)."""
    token = secrets.token_hex(4).encode()
    sandbox = fn.sandbox
    try:
        before = sandbox.call(guard_doc_head, (len(token),), {}, fresh=True)
        planted = sandbox.call(plant_in_supervisor, (token,), {}, fresh=True)
        return before, planted, sandbox.call(guard_doc_head, (len(token),), {}, fresh=True)
    finally:
        sandbox.shutdown()


# Broken on main before the supervisor was made non-dumpable (seen: a Hardened call
# planted bytes that the next fresh worker read); held since.
@pytest.mark.parametrize("spec", [held(DYNAMIC), held(NOBODY), held(ROOT_NNRO)])
def test_redteam_a_call_cannot_plant_state_in_the_supervisor(spec: Any) -> None:
    before, planted, after = _plant_then_look(attacker(spec))
    assert planted != OK and after == before, (planted, after)


def test_redteam_control_the_supervisor_is_writable_with_cap_sys_ptrace() -> None:
    # Stated non-guarantee: CAP_SYS_PTRACE (no baseline) reads and writes any process of
    # the unit, non-dumpable or not. The probe does plant.
    before, planted, after = _plant_then_look(uncontained())
    assert planted == OK and after != before, (planted, after)


# -- 3. the manager's resource limits and OOM score, through prlimit() and /proc/1 -----------


def lower_pid1_nofile_soft_limit() -> str:
    """Lower PID 1's soft RLIMIT_NOFILE by one, read it back through /proc/1/limits,
    restore it. ``"ok"`` if the manager's limit changed."""
    libc = ctypes.CDLL(None, use_errno=True)

    class Rlimit(ctypes.Structure):
        _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]

    def soft() -> int:
        with open("/proc/1/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        return int(line.split()[3])

    def change() -> None:
        old = Rlimit()
        if libc.prlimit(1, 7, None, ctypes.byref(old)) != 0:
            raise OSError(ctypes.get_errno(), "prlimit get")
        new = Rlimit(old.cur - 1, old.max)
        if libc.prlimit(1, 7, ctypes.byref(new), None) != 0:
            raise OSError(ctypes.get_errno(), "prlimit set")
        try:
            if soft() != old.cur - 1:
                raise RuntimeError("the limit did not change")
        finally:
            libc.prlimit(1, 7, ctypes.byref(old), None)

    return attempt(change)


def raise_pid1_oom_score() -> str:
    """Raise PID 1's oom_score_adj by one (the OOM killer's choice), then restore it."""

    def change() -> None:
        path = "/proc/1/oom_score_adj"
        with open(path) as f:
            old = int(f.read())
        with open(path, "w") as f:
            f.write(str(old + 1))
        try:
            with open(path) as f:
                if int(f.read()) != old + 1:
                    raise RuntimeError("unchanged")
        finally:
            with open(path, "w") as f:
                f.write(str(old))

    return attempt(change)


OOM_FINDING = (
    "root writes /proc/1/oom_score_adj (owner kuid 0, no ptrace check): it makes the "
    "manager the OOM killer's first choice"
)


@pytest.mark.parametrize("spec", EVERY_SPEC_HELD)
def test_redteam_the_managers_resource_limits_cannot_be_changed(spec: Any) -> None:
    assert attacker(spec)(lower_pid1_nofile_soft_limit) != OK


@pytest.mark.parametrize(
    "spec",
    [
        broken(ROOT_RO, OOM_FINDING),
        broken(ROOT_NNRO, OOM_FINDING),
        broken(ROOT_HARDENED, OOM_FINDING),
        held(NOBODY),
        held(DYNAMIC),
    ],
)
def test_redteam_the_managers_oom_score_cannot_be_changed(spec: Any) -> None:
    assert attacker(spec)(raise_pid1_oom_score) != OK


def renice_pid1_autogroup() -> str:
    """Raise the nice value of PID 1's autogroup (every process in it) by one, restore it.

    The kernel rate-limits unprivileged autogroup changes (EAGAIN within 100 ms): the
    restore waits and retries, and never decides the outcome."""
    import time

    path = "/proc/1/autogroup"

    def nice() -> int:
        with open(path) as f:
            return int(f.read().split()[-1])  # "/autogroup-N nice 0"

    def write(value: int) -> None:
        with open(path, "w") as f:
            f.write(str(value))

    try:
        old = nice()
    except OSError:
        return attempt(nice)  # PID 1 hidden (ProtectProc=): refused
    outcome = attempt(lambda: write(old + 1))
    for _ in range(40):  # an earlier probe's restore may still hold the rate limit
        if outcome != "BlockingIOError EAGAIN":
            break
        time.sleep(0.15)
        outcome = attempt(lambda: write(old + 1))
    if outcome == OK and nice() != old + 1:
        outcome = "unchanged"
    for _ in range(40):
        if nice() == old:
            break
        time.sleep(0.15)
        attempt(lambda: write(old))
    return outcome


AUTOGROUP_FINDING = (
    "root writes /proc/1/autogroup (owner kuid 0; only a lower nice needs CAP_SYS_NICE): "
    "it deprioritises the manager's whole autogroup, though setpriority(1) is refused"
)


@pytest.mark.parametrize(
    "spec",
    [
        broken(ROOT_RO, AUTOGROUP_FINDING),
        broken(ROOT_NNRO, AUTOGROUP_FINDING),
        held(NOBODY),
        held(DYNAMIC),
    ],
)
def test_redteam_the_managers_autogroup_cannot_be_reniced(spec: Any) -> None:
    if not os.path.exists("/proc/1/autogroup"):
        pytest.skip("this kernel has no autogroups")
    assert attacker(spec)(renice_pid1_autogroup) != OK


def test_redteam_control_limits_and_oom_score_change_without_containment() -> None:
    run = uncontained()
    assert run(lower_pid1_nofile_soft_limit) == OK
    assert run(raise_pid1_oom_score) == OK
    if os.path.exists("/proc/1/autogroup"):
        assert run(renice_pid1_autogroup) == OK


def reschedule_pid1() -> dict[str, str]:
    """Scheduling changes to PID 1 that change nothing (same values): permission probes."""
    return {
        "setpriority": attempt(
            lambda: os.setpriority(os.PRIO_PROCESS, 1, os.getpriority(os.PRIO_PROCESS, 1))
        ),
        "sched_setaffinity": attempt(lambda: os.sched_setaffinity(1, os.sched_getaffinity(1))),
        "sched_setscheduler": attempt(
            lambda: os.sched_setscheduler(1, os.sched_getscheduler(1), os.sched_param(0))
        ),
    }


@pytest.mark.parametrize("spec", [held(ROOT_RO), held(ROOT_NNRO), held(NOBODY)])
def test_redteam_the_manager_cannot_be_rescheduled(spec: Any) -> None:
    outcomes = attacker(spec)(reschedule_pid1)
    assert [w for w, o in outcomes.items() if o == OK] == [], outcomes


def test_redteam_control_the_manager_is_rescheduled_without_containment() -> None:
    outcomes = uncontained()(reschedule_pid1)
    assert all(o == OK for o in outcomes.values()), outcomes


# -- 4. System V shared memory: the host's IPC namespace, outside every listed place ---------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmdt.argtypes = [ctypes.c_void_p]
IPC_CREAT, IPC_RMID = 0o1000, 0


def shm_write(key: int, data: bytes, create: bool, mode: int = 0o600) -> str:
    """Attach (or create) the System V segment ``key`` and write ``data`` at its start."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    libc.shmdt.argtypes = [ctypes.c_void_p]

    def write() -> None:
        sid = libc.shmget(key, 4096, (IPC_CREAT | mode) if create else 0)
        if sid < 0:
            raise OSError(ctypes.get_errno(), "shmget")
        addr = libc.shmat(sid, None, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "shmat")
        ctypes.memmove(addr, data, len(data))
        libc.shmdt(addr)

    return attempt(write)


def shm_read(key: int, n: int) -> bytes | None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    libc.shmdt.argtypes = [ctypes.c_void_p]
    sid = libc.shmget(key, 0, 0)
    if sid < 0:
        return None
    addr = libc.shmat(sid, None, 0o10000)  # SHM_RDONLY
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    data = ctypes.string_at(addr, n)
    libc.shmdt(addr)
    return data


def _remove(key: int) -> None:
    sid = _libc.shmget(key, 0, 0)
    if sid >= 0:
        _libc.shmctl(sid, IPC_RMID, None)


@pytest.fixture
def shm_key() -> Iterator[int]:
    key = int.from_bytes(secrets.token_bytes(4), "little") & 0x7FFFFFFF
    yield key
    _remove(key)


@pytest.fixture
def host_segment(shm_key: int) -> Iterator[int]:
    """A root-only (0600) segment of the host's, holding a secret."""
    assert shm_write(shm_key, b"host secret", create=True) == OK
    yield shm_key


@pytest.mark.parametrize("spec", EVERY_SPEC_HELD)
def test_redteam_the_hosts_shared_memory_cannot_be_written(spec: Any, host_segment: int) -> None:
    attacker(spec)(shm_write, host_segment, b"sandbox was here", False)
    assert shm_read(host_segment, 11) == b"host secret"


@pytest.mark.parametrize(
    "spec",
    [
        held(ROOT_NNRO),
        held(NOBODY),
        held(DYNAMIC),
    ],
)
def test_redteam_shared_memory_does_not_outlive_the_unit(spec: Any, shm_key: int) -> None:
    fn = attacker(spec)
    token = secrets.token_hex(8).encode()
    fn(shm_write, shm_key, token, True, 0o666)
    fn.sandbox.shutdown()
    later = attacker(spec)
    try:
        assert later(shm_read, shm_key, len(token)) != token
    finally:
        later.sandbox.shutdown()


def test_redteam_control_shared_memory_without_containment(host_segment: int) -> None:
    assert uncontained()(shm_write, host_segment, b"sandbox was here", False) == OK
    assert shm_read(host_segment, 16) == b"sandbox was here"


# -- 5. the x32 ABI around the worker's signal filter (kill with nr | 0x40000000) ------------


def x32_kill0(pid: int) -> str:
    libc = ctypes.CDLL(None, use_errno=True)

    def kill() -> None:
        if libc.syscall(ctypes.c_long(0x40000000 | 62), pid, 0) < 0:
            raise OSError(ctypes.get_errno(), "x32 kill")

    return attempt(kill)


def test_redteam_x32_kill_is_not_a_way_around_the_signal_filter() -> None:
    # The guard's filter matches kill by its x86_64 number only; an x32 call has the
    # same audit arch and another number. Where the kernel runs x32 calls, root would
    # signal the manager this way; this kernel refuses them (ENOSYS) outside any sandbox.
    if os.uname().machine != "x86_64":
        pytest.skip("x32 exists only on x86_64")
    control = uncontained()(x32_kill0, 1)
    if control != OK:
        pytest.skip(f"this kernel has no x32 calls ({control}): the filter cannot be tested")
    assert in_sandbox(ReadOnly)(x32_kill0, 1) != OK


def make_queue_and_semaphore(key: int) -> dict[str, str]:
    """A System V message queue and semaphore set under ``key`` (0600)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def make(fn: Any, *args: int) -> str:
        def call() -> None:
            if fn(*args) < 0:
                raise OSError(ctypes.get_errno(), "get")

        return attempt(call)

    return {
        "msgget": make(libc.msgget, key, IPC_CREAT | 0o600),
        "semget": make(libc.semget, key, 1, IPC_CREAT | 0o600),
    }


def _left_on_host(key: int) -> list[str]:
    left = []
    qid = _libc.msgget(key, 0)
    if qid >= 0:
        left.append("msg")
        _libc.msgctl(qid, IPC_RMID, None)
    sid = _libc.semget(key, 0, 0)
    if sid >= 0:
        left.append("sem")
        _libc.semctl(sid, 0, IPC_RMID)
    return left


@pytest.mark.parametrize(
    "spec",
    [held(ROOT_NNRO), held(NOBODY), held(DYNAMIC)],
)
def test_redteam_message_queues_and_semaphores_do_not_outlive_the_unit(
    spec: Any, shm_key: int
) -> None:
    fn = attacker(spec)
    try:
        fn(make_queue_and_semaphore, shm_key)
    finally:
        fn.sandbox.shutdown()
    assert _left_on_host(shm_key) == []


def test_redteam_control_message_queues_outlive_an_uncontained_unit(shm_key: int) -> None:
    fn = uncontained()
    try:
        assert fn(make_queue_and_semaphore, shm_key) == {"msgget": OK, "semget": OK}
    finally:
        fn.sandbox.shutdown()
    assert _left_on_host(shm_key) == ["msg", "sem"]
