"""``TransientUnitPoolExecutor`` behaves as ``concurrent.futures`` users expect (issue 16).

Exit and Ctrl-C, batching that never idles a worker, submission order,
``cancel_futures`` on batched tasks, the constructor shapes that
``ProcessPoolExecutor``, concurrentd and pystemd users bring, and
``pool.unit`` in their spellings. Against a real systemd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from tasks import nap, square
from truth_tasks import pid_after, read_file, write_file

from sandboxed import (
    ConfigurationError,
    ConflictingDirectivesError,
    TransientUnitPoolExecutor,
    WorkerDiedError,
)

pytestmark = pytest.mark.systemd

TESTS = Path(__file__).resolve().parents[1]


def run_script(code: str, timeout: float = 120, **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background jobs ignore SIGINT; the script must see it as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


def unit_names(client: Any) -> set[str]:
    return {u[0] for u in client.list_units(["sandboxed-*"])}


# -- exit -----------------------------------------------------------------------------------


def test_tasks_submitted_without_shutdown_finish_at_exit(systemd: Any, tmp_path: Path) -> None:
    out = tmp_path / "done"
    proc = run_script(
        f"""
        from tasks import nap
        from sandboxed import TransientUnitPoolExecutor
        pool = TransientUnitPoolExecutor(2)
        futs = [pool.submit(nap, 0.5, i) for i in range(6)]
        def record(f):
            with open({str(out)!r}, "a") as fh:
                fh.write(f"{{f.result()}}\\n")
        for f in futs:
            f.add_done_callback(record)
        """
    )
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert sorted(out.read_text().split()) == [str(i) for i in range(6)]


def test_a_thread_blocked_in_a_call_does_not_hang_exit(systemd: Any, client: Any) -> None:
    before = unit_names(client)
    proc = run_script(
        """
        import threading
        from tasks import nap
        from sandboxed import sandboxed, WorkerDiedError
        fn = sandboxed(CPUWeight=61)(nap)
        def blocked():
            try:
                fn(3600)
            except WorkerDiedError as e:
                print("stopped:", e, flush=True)
        t = threading.Thread(target=blocked)
        t.start()
        import time
        time.sleep(3)
        """
    )
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped:" in stdout
    assert "interpreter exit" in stdout
    assert unit_names(client) == before


def test_ctrl_c_in_a_pool_cancels_queued_tasks_and_stops_running_ones(
    systemd: Any, client: Any
) -> None:
    before = unit_names(client)
    proc = run_script(
        """
        import sys
        from tasks import nap
        from sandboxed import TransientUnitPoolExecutor
        futs = []
        try:
            with TransientUnitPoolExecutor(2) as pool:
                futs = [pool.submit(nap, 60, i) for i in range(8)]
                print("submitted", flush=True)
                sys.stdin.readline()
        except KeyboardInterrupt:
            print("cancelled", sum(f.cancelled() for f in futs), flush=True)
            print("done", sum(f.done() for f in futs), flush=True)
        """,
        stdin=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "submitted"
    time.sleep(3)  # the first tasks have started (not a timing assertion: a precondition)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    lines = dict(line.split() for line in stdout.splitlines())
    assert int(lines["cancelled"]) >= 6
    assert lines["done"] == "8"
    assert unit_names(client) == before


# -- batching and order --------------------------------------------------------------------


def test_long_tasks_on_a_cold_pool_use_every_worker(systemd: Any) -> None:
    with TransientUnitPoolExecutor(2) as pool:
        futs = [pool.submit(pid_after, 1) for _ in range(6)]
        counts: dict[int, int] = {}
        for f in futs:
            counts[f.result()] = counts.get(f.result(), 0) + 1
    # Each worker ran three of the six: none was batched onto one worker while another idled.
    assert sorted(counts.values()) == [3, 3]


def test_tasks_start_in_submission_order_on_one_worker(systemd: Any) -> None:
    with TransientUnitPoolExecutor(1) as pool:
        futs = [pool.submit(time.monotonic_ns) for _ in range(40)]
        starts = [f.result() for f in futs]
    assert starts == sorted(starts)


def test_cancel_futures_cancels_batched_tasks_that_have_not_started(systemd: Any) -> None:
    pool = TransientUnitPoolExecutor(1)
    futs = [pool.submit(nap, 0.3, i) for i in range(30)]
    futs[0].result()
    pool.shutdown(wait=True, cancel_futures=True)
    cancelled = sum(f.cancelled() for f in futs)
    ran = sum(f.done() and not f.cancelled() for f in futs)
    assert cancelled >= 20, (cancelled, ran)
    assert cancelled + ran == 30


# -- constructor shapes --------------------------------------------------------------------


def test_initializer_runs_in_each_worker_before_its_tasks(systemd: Any) -> None:
    with TransientUnitPoolExecutor(
        1, initializer=write_file, initargs=("/tmp/sbx16-init", "ready"), PrivateTmp=True
    ) as pool:
        assert pool.submit(read_file, "/tmp/sbx16-init").result() == "ready"


def test_a_failing_initializer_fails_the_tasks_with_its_error(systemd: Any) -> None:
    with (
        TransientUnitPoolExecutor(1, initializer=read_file, initargs=("/nonexistent16",)) as pool,
        pytest.raises(RuntimeError) as info,
    ):
        pool.submit(square, 3).result()
    assert "initializer" in str(info.value)


def test_max_tasks_per_child_replaces_the_worker(systemd: Any) -> None:
    with TransientUnitPoolExecutor(1, max_tasks_per_child=2) as pool:
        pids = [pool.submit(os.getpid).result() for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] and pids[2] == pids[3]


def test_pystemds_positional_properties_dict_is_accepted(systemd: Any) -> None:
    with TransientUnitPoolExecutor(
        {"CPUQuotaPerSecUSec": 200000, "User": "nobody"}, max_workers=2
    ) as pool:
        assert pool.submit(os.getuid).result() == 65534
        assert pool.unit.CPUQuotaPerSecUSec == 200000


def test_pystemds_bytes_keys_are_accepted(systemd: Any) -> None:
    props = {b"User": b"nobody", b"PrivateNetwork": True}
    with TransientUnitPoolExecutor(props, max_workers=1) as pool:
        assert pool.submit(os.getuid).result() == 65534


def test_an_ns_options_conflict_names_both_spellings(systemd: Any) -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        TransientUnitPoolExecutor(ns_options={"CPUQuota": 0.2}, CPUQuota=0.5)
    text = str(info.value)
    assert "pass the directive as a keyword argument" not in text
    assert "ns_options" in text and "keyword" in text


def test_a_bad_max_tasks_per_child_is_refused(systemd: Any) -> None:
    with pytest.raises(ConfigurationError):
        TransientUnitPoolExecutor(1, max_tasks_per_child=0)


# -- pool.unit in concurrentd's and pystemd's spellings -----------------------------------


def test_pool_unit_describes_the_unit_that_replaced_a_dead_one(systemd: Any) -> None:
    with TransientUnitPoolExecutor(1, RuntimeMaxSec=2) as pool:
        first = pool.unit.Id
        with pytest.raises(WorkerDiedError):
            pool.submit(nap, 30).result()
        assert pool.submit(square, 3).result() == 9
        assert pool.unit.Id != first
        assert pool.unit.ActiveState == b"active"


def test_pool_unit_offers_pystemds_interface_spellings(systemd: Any) -> None:
    with TransientUnitPoolExecutor(1) as pool:
        pool.submit(square, 2).result()
        assert pool.unit.Unit.Id == pool.unit.Id
        assert pool.unit.Unit.ActiveState == b"active"
        assert pool.unit.Service.MainPID == pool.unit.MainPID
        procs = pool.unit.Service.GetProcesses()
        assert procs
        assert all(isinstance(p[1], int) for p in procs)


def test_pool_unit_pids_are_in_the_callers_pid_namespace(systemd: Any) -> None:
    with TransientUnitPoolExecutor(1) as pool:
        worker_pid = pool.submit(os.getpid).result()
        main_pid = pool.unit.MainPID
        assert main_pid > 0
        with open(f"/proc/{main_pid}/cmdline", "rb") as f:
            assert b"sandboxed" in f.read()
        pids = [p[1] for p in pool.unit.Service.GetProcesses()]
        assert main_pid in pids
        for pid in pids:
            assert os.path.exists(f"/proc/{pid}")
        del worker_pid


def test_pystemds_user_mode_is_refused_with_what_to_do(systemd: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        TransientUnitPoolExecutor({"User": "nobody"}, user_mode=True)
    assert "user_mode" in str(info.value)
