"""Limits you can trust: timeouts, OOM, fork bombs, crashes, manager restarts, accounting, size.

Every fault here is provoked for real inside a real unit; nothing is simulated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sandboxed
from sandboxed import (
    PayloadTooLargeError,
    ResourceLimitError,
    SandboxMemoryError,
    SandboxTimeoutError,
    TransientUnitPoolExecutor,
    WorkerDiedError,
)
from sandboxed import (
    sandboxed as sandbox,
)
from sandboxed.systemd.bus import ManagerClient

pytestmark = pytest.mark.usefixtures("systemd")


def _sleep_then(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def _identity(x: object) -> object:
    return x


# -- timeouts ---------------------------------------------------------------------------------


@sandbox(timeout=0.5, User="nobody")
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_a_call_past_its_timeout_is_stopped_and_raises_naming_the_limit() -> None:
    t0 = time.monotonic()
    with pytest.raises(SandboxTimeoutError) as info:
        slow(30)
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 0.5
    assert "0.5 s" in str(info.value)


def test_the_unit_keeps_working_after_a_timeout() -> None:
    with pytest.raises(SandboxTimeoutError):
        slow(30)
    unit = slow.sandbox.unit_name
    assert slow(0.01) == "done"
    assert slow.sandbox.unit_name == unit


def test_a_worker_that_ignores_sigterm_is_killed_at_the_timeout() -> None:
    @sandbox(timeout=0.5, User="nobody")
    def stubborn() -> None:
        import signal as s

        s.signal(s.SIGTERM, s.SIG_IGN)
        while True:
            time.sleep(0.1)

    t0 = time.monotonic()
    with pytest.raises(SandboxTimeoutError):
        stubborn()
    assert time.monotonic() - t0 < 5


def test_a_timeout_preset_applies_and_the_executor_honours_it() -> None:
    with TransientUnitPoolExecutor(1, sandboxed.Timeout(0.5), User="nobody") as pool:
        fut = pool.submit(_sleep_then, 30, "late")
        with pytest.raises(SandboxTimeoutError):
            fut.result(timeout=10)
        assert pool.submit(_identity, 7).result(timeout=30) == 7


# -- memory ---------------------------------------------------------------------------------


@sandbox(MemoryMax="100M", MemorySwapMax=0, User="nobody")
def hog(mib: int) -> int:
    blocks = []
    for _ in range(mib):
        blocks.append(bytearray(1 << 20))
        blocks[-1][::4096] = b"x" * (len(blocks[-1]) // 4096)
    return len(blocks)


def test_exceeding_memory_max_raises_a_memory_error_naming_the_limit_and_the_oom_killer() -> None:
    with pytest.raises(SandboxMemoryError) as info:
        hog(400)
    err = info.value
    assert isinstance(err, MemoryError)
    assert err.limit == 100 * 2**20
    assert "OOM killer" in str(err)
    assert str(100 * 2**20) in str(err)


def test_the_next_call_works_after_an_oom_kill_and_the_caller_is_unaffected() -> None:
    with pytest.raises(SandboxMemoryError):
        hog(400)
    assert hog(10) == 10
    assert bytearray(50 << 20)  # the caller can still allocate freely


# -- tasks --------------------------------------------------------------------------------------


@sandbox(TasksMax=12, User="nobody")
def fork_bomb() -> int:
    import os as o

    children = 0
    while True:
        pid = o.fork()
        if pid == 0:
            while True:
                time.sleep(1)
        children += 1
        if children > 1000:
            return children


@sandbox(TasksMax=12, User="nobody")
def count_tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def test_a_fork_bomb_is_contained_reported_and_the_unit_recovers() -> None:
    first_unit = None
    with pytest.raises(ResourceLimitError) as info:
        try:
            fork_bomb()
        finally:
            first_unit = fork_bomb.sandbox.unit_name
    assert info.value.directive == "TasksMax"
    assert info.value.limit == 12
    assert isinstance(info.value.__cause__, OSError | WorkerDiedError | sandboxed.RemoteError)
    # The next call runs in a fresh unit with nothing of the bomb left.
    assert count_tasks() >= 1
    c = ManagerClient(sandboxed.systemd.locate.current().address)
    try:
        deadline = time.monotonic() + 10
        names = {u[0] for u in c.list_units()}
        while first_unit in names and time.monotonic() < deadline:
            time.sleep(0.1)
            names = {u[0] for u in c.list_units()}
        assert first_unit not in names
    finally:
        c.close()


# -- crashes ------------------------------------------------------------------------------------


@sandbox(User="nobody")
def crash(how: str) -> None:
    import ctypes

    if how == "exit":
        os._exit(7)
    if how == "segv":
        ctypes.string_at(0)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(
    ("how", "code", "sig"),
    [("exit", 7, None), ("segv", None, "SIGSEGV"), ("kill", None, "SIGKILL")],
    ids=["os._exit", "segfault", "sigkill"],
)
def test_a_crashing_worker_raises_with_exit_code_or_signal_and_the_next_call_works(
    how: str, code: int | None, sig: str | None
) -> None:
    with pytest.raises(WorkerDiedError) as info:
        crash(how)
    assert info.value.exit_code == code
    assert info.value.signal == sig
    assert (str(code) if code is not None else sig) in str(info.value)
    assert crash("nothing") is None


def test_a_unit_stopped_behind_our_back_fails_the_running_call_and_the_next_call_gets_a_new_unit(
    systemd: object,
) -> None:
    @sandbox(User="nobody", Environment="PURPOSE=stop-behind-back")
    def wait_long() -> str:
        time.sleep(30)
        return "late"

    @sandbox(User="nobody", Environment="PURPOSE=stop-behind-back")
    def quick() -> str:
        return "ok"

    assert quick() == "ok"
    unit = quick.sandbox.unit_name
    import threading

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            wait_long()
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    c = ManagerClient(sandboxed.systemd.locate.current().address)
    c.stop_unit(unit)
    c.close()
    t.join(20)
    assert outcome and isinstance(outcome[0], WorkerDiedError)
    assert quick() == "ok"
    assert quick.sandbox.unit_name != unit


# -- the manager -----------------------------------------------------------------------------


def test_calls_survive_daemon_reload_and_reexec_and_later_calls_reconnect(systemd: object) -> None:
    import threading

    @sandbox(User="nobody", Environment="PURPOSE=reload")
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    assert nap(0) == "rested"
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(nap(3)))
    t.start()
    time.sleep(0.3)
    for verb in ("daemon-reload", "daemon-reexec"):
        r = systemd.run(["systemctl", verb])  # type: ignore[attr-defined]
        assert r.returncode == 0, r.stderr
    t.join(30)
    assert results == ["rested"]
    # A new option set needs the manager again, through a reconnected client.
    fresh = sandbox(User="nobody", Environment=f"PURPOSE=after-reexec-{os.getpid()}")(_identity)
    assert fresh(5) == 5


def test_a_dropped_dbus_connection_is_reestablished_for_later_calls() -> None:
    from sandboxed.runtime import client

    client.manager_client().close()
    fresh = sandbox(User="nobody", Environment=f"PURPOSE=after-drop-{os.getpid()}")(_identity)
    assert fresh("x") == "x"


def test_a_caller_killed_with_sigkill_mid_call_leaves_no_unit_or_process_within_5_s(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)  # the script's directory is on the worker's sys.path
    script = tmp_path / "victim.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, sys
            from sandboxed import sandboxed

            @sandboxed(User="nobody")
            def forever():
                time.sleep(600)

            @sandboxed(User="nobody")
            def name():
                return 1

            name()
            print(name.sandbox.unit_name, flush=True)
            forever()
            """
        )
    )
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    unit = p.stdout.readline().strip()
    assert unit.startswith("sandboxed-")
    time.sleep(1.0)
    p.kill()
    p.wait()
    t0 = time.monotonic()
    c = ManagerClient(sandboxed.systemd.locate.current().address)
    try:
        while time.monotonic() - t0 < 5:
            if unit not in {u[0] for u in c.list_units()}:
                break
            time.sleep(0.1)
        assert unit not in {u[0] for u in c.list_units()}
    finally:
        c.close()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(p.pid) not in ps or "sandboxed.worker.main" not in ps


# -- accounting ---------------------------------------------------------------------------------


@sandbox(User="nobody", Environment="PURPOSE=accounting")
def burn(seconds: float) -> float:
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < seconds:
        x += 1
    return time.process_time() - t0


@sandbox(User="nobody", Environment="PURPOSE=accounting")
def touch(mib: int) -> int:
    buf = bytearray(mib << 20)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    return len(buf)


def test_cpu_time_of_a_call_matches_an_independent_measurement_within_10_percent() -> None:
    burn(0.01)  # the first call in a worker also imports this module: warm it up
    inside = burn(1.0)
    stats = burn.last_stats
    assert stats is not None
    assert abs(stats.cpu_time - inside) <= 0.1 * inside, (stats.cpu_time, inside)
    assert stats.wall_time >= inside * 0.9


def test_peak_memory_of_a_call_reflects_200_mb_touched_within_10_percent() -> None:
    touch(1)
    baseline = touch.last_stats
    assert baseline is not None and baseline.peak_memory is not None
    touch(200)
    stats = touch.last_stats
    assert stats is not None and stats.peak_memory is not None
    grown = stats.peak_memory - baseline.peak_memory
    assert abs(grown - (200 << 20)) <= 0.1 * (200 << 20), grown


def test_stats_are_per_call_and_available_from_the_executor_future() -> None:
    with TransientUnitPoolExecutor(1, User="nobody") as pool:
        fut = pool.submit(_identity, 1)
        assert fut.result() == 1
        stats = fut.stats  # type: ignore[attr-defined]
        assert stats is not None
        assert stats.unit == pool.unit.name
        assert stats.wall_time > 0
        assert stats.tasks is not None and stats.tasks >= 2


def test_last_call_stats_is_per_thread() -> None:
    burn(0.05)
    s = sandboxed.last_call_stats()
    assert s is not None and s.cpu_time > 0


# -- sizes ---------------------------------------------------------------------------------------


@sandbox(User="nobody", Environment="PURPOSE=sizes")
def size_of(blob: bytes) -> int:
    return len(blob)


@sandbox(User="nobody", Environment="PURPOSE=sizes")
def make(n: int) -> bytes:
    return bytes(n)


def test_a_1_gib_argument_and_result_cross_the_boundary_intact() -> None:
    gib = 1 << 30
    blob = b"\x01" * gib
    assert size_of(blob) == gib
    del blob
    out = make(gib)
    assert len(out) == gib and out[:4] == b"\0\0\0\0"


def test_a_value_past_max_payload_fails_with_a_clear_size_error_before_sending() -> None:
    limited = sandbox(User="nobody", max_payload=1 << 20)(_identity)
    with pytest.raises(PayloadTooLargeError) as info:
        limited(b"x" * (2 << 20))
    assert info.value.limit == 1 << 20
    assert "bytes is more than the limit" in str(info.value)


def test_a_result_past_max_payload_fails_with_a_size_error_and_the_sandbox_recovers() -> None:
    limited = sandbox(User="nobody", max_payload=1 << 20)(make)
    with pytest.raises(PayloadTooLargeError):
        limited(4 << 20)
    assert limited(10) == bytes(10)


def test_a_function_whose_sandbox_was_shut_down_gets_a_fresh_one_on_the_next_call() -> None:
    f = sandbox(User="nobody", Environment="PURPOSE=reopen")(_identity)
    assert f(1) == 1
    first = f.sandbox.unit_name
    f.sandbox.shutdown()
    assert f(2) == 2
    assert f.sandbox.unit_name not in (None, first)


def _worker_pids(fn: object) -> list[int]:
    """Host PIDs of the workers (not the supervisor) in ``fn``'s unit."""
    unit = fn.sandbox._unit  # type: ignore[attr-defined]
    dirs = unit.probe.dirs()
    cg = dirs.get("pids") or dirs.get("unified")
    pids = [int(p) for p in Path(cg, "cgroup.procs").read_text().split()]

    def ppid(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    return [p for p in pids if ppid(p) in pids]


def test_a_worker_killed_from_outside_fails_its_call_naming_sigkill_and_the_next_call_works() -> (
    None
):
    import threading

    @sandbox(User="nobody", Environment="PURPOSE=outside-kill")
    def wait(seconds: float) -> str:
        time.sleep(seconds)
        return "woke"

    assert wait(0) == "woke"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            wait(30)
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    victims = _worker_pids(wait)
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    t.join(20)
    assert outcome and isinstance(outcome[0], WorkerDiedError)
    assert outcome[0].signal == "SIGKILL"
    assert "SIGKILL" in str(outcome[0])
    assert wait(0) == "woke"


def test_accounting_can_be_turned_off_for_hot_functions() -> None:
    hot = sandbox(User="nobody", Environment="PURPOSE=hot", accounting=False)(_identity)
    assert hot(3) == 3
    assert hot.last_stats is None
    counted = sandbox(User="nobody", Environment="PURPOSE=hot")(_identity)
    assert counted(4) == 4
    assert counted.last_stats is not None
    # Same unit: accounting is per call, not part of the sandbox's key.
    assert hot.sandbox is counted.sandbox
    with pytest.raises(sandboxed.ConfigurationError, match="accounting"):
        sandbox(accounting="no")
