"""``TransientUnitPoolExecutor`` (issue 5) against a real systemd.

concurrent.futures compliance, the live unit, the seed example and its CPU
quota, PrivateTmp across tasks, and workers that die without breaking the pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import glob
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tasks import (
    die_by_exit,
    die_by_segfault,
    die_by_sigkill,
    fail,
    nap,
    pair,
    read_tmp,
    span,
    square,
    write_tmp,
)

from sandboxed import TransientUnitPoolExecutor, WorkerDiedError
from sandboxed.systemd.cgroups import CgroupProbe

pytestmark = pytest.mark.systemd

CHECKOUT = Path(__file__).resolve().parents[2]
SEED = CHECKOUT / "recipes" / "seed_example.py"


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(systemd: Any) -> Iterator[TransientUnitPoolExecutor]:
    """One pool for the tests that leave it serving: unit start-up is paid once."""
    with TransientUnitPoolExecutor(2, ns_options={"PrivateTmp": True}) as p:
        yield p


def unit_names(client: Any) -> set[str]:
    return {u[0] for u in client.list_units(["sandboxed-*"])}


def cpu_seconds(probe: CgroupProbe) -> float:
    ns = probe.cpu_ns()
    assert ns is not None, "no CPU accounting for the unit's cgroup"
    return ns / 1e9


# -- concurrent.futures compliance ---------------------------------------------------------


def test_submit_returns_a_future_with_the_result(pool: TransientUnitPoolExecutor) -> None:
    fut = pool.submit(pair, 1, y=2)
    assert isinstance(fut, cf.Future)
    x, y, pid = fut.result(timeout=30)
    assert (x, y) == (1, 2) and pid != os.getpid()


def test_a_tasks_exception_comes_back_as_itself_through_the_future(
    pool: TransientUnitPoolExecutor,
) -> None:
    fut = pool.submit(fail, "missing")
    exc = fut.exception(timeout=30)
    assert type(exc) is KeyError and exc.args == ("missing",)
    assert exc.__cause__ is not None and "fail" in str(exc.__cause__)
    with pytest.raises(KeyError):
        fut.result()


def test_map_returns_results_in_order(pool: TransientUnitPoolExecutor) -> None:
    assert list(pool.map(square, range(7))) == [x * x for x in range(7)]
    assert list(pool.map(pair, [1, 2], [3, 4]))[1][:2] == (2, 4)


@pytest.mark.parametrize("chunksize", [2, 3, 20])
def test_map_with_chunksize_returns_every_result_in_order(
    pool: TransientUnitPoolExecutor, chunksize: int
) -> None:
    assert list(pool.map(square, range(10), chunksize=chunksize)) == [x * x for x in range(10)]


def test_map_with_a_timeout_raises_timeout_error(pool: TransientUnitPoolExecutor) -> None:
    results = pool.map(nap, [1.0, 1.0], timeout=0.3)
    with pytest.raises(cf.TimeoutError):
        list(results)


def test_chunksize_below_one_is_refused(pool: TransientUnitPoolExecutor) -> None:
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(square, [1], chunksize=0)


def test_as_completed_and_wait_work_on_its_futures(pool: TransientUnitPoolExecutor) -> None:
    slow = pool.submit(nap, 0.6, "slow")
    fast = pool.submit(nap, 0.0, "fast")
    order = [f.result() for f in cf.as_completed([slow, fast], timeout=30)]
    assert order == ["fast", "slow"]
    again = pool.submit(nap, 0.5, "x")
    done, not_done = cf.wait([again, pool.submit(square, 3)], return_when=cf.FIRST_COMPLETED)
    assert len(done) >= 1 and not_done <= {again}
    done, not_done = cf.wait([again], timeout=30)
    assert done == {again} and not not_done


def test_asyncio_run_in_executor_works_with_the_pool(pool: TransientUnitPoolExecutor) -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(
                loop.run_in_executor(pool, square, 5), loop.run_in_executor(pool, nap, 0.1, "ok")
            )
        )

    assert asyncio.run(main()) == [25, "ok"]


def test_pending_futures_can_be_cancelled_and_never_run(systemd: Any) -> None:
    with TransientUnitPoolExecutor(1) as p:
        running = p.submit(nap, 0.6, "ran")
        time.sleep(0.2)
        pending = [p.submit(write_tmp, f"sbx-cancel-{i}", "x") for i in range(3)]
        assert all(f.cancel() for f in pending)
        assert running.cancel() is False  # already running
        assert running.result(timeout=30) == "ran"
        assert all(f.cancelled() for f in pending)
        assert p.submit(read_tmp, "sbx-cancel-0").result(timeout=30) is None


def test_shutdown_with_cancel_futures_cancels_what_has_not_started(
    systemd: Any, client: Any
) -> None:
    p = TransientUnitPoolExecutor(1)
    name = p.unit.name
    running = p.submit(nap, 0.5, "ran")
    time.sleep(0.2)
    pending = [p.submit(square, i) for i in range(4)]
    p.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == "ran"  # wait=True let it finish
    assert all(f.cancelled() for f in pending)
    assert name not in unit_names(client)
    with pytest.raises(RuntimeError):
        p.submit(square, 1)


def test_shutdown_without_wait_returns_at_once_and_the_unit_goes_later(
    systemd: Any, client: Any
) -> None:
    p = TransientUnitPoolExecutor(1)
    name = p.unit.name
    fut = p.submit(nap, 0.5, "finished")
    time.sleep(0.1)
    t0 = time.monotonic()
    p.shutdown(wait=False)
    assert time.monotonic() - t0 < 0.3
    assert fut.result(timeout=30) == "finished"
    deadline = time.monotonic() + 10
    while name in unit_names(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert name not in unit_names(client)


def test_the_context_manager_waits_for_tasks_and_stops_the_unit(systemd: Any, client: Any) -> None:
    with TransientUnitPoolExecutor(2) as p:
        name = p.unit.name
        assert name in unit_names(client)
        futs = [p.submit(nap, 0.3, i) for i in range(2)]
    assert [f.result(timeout=0) for f in futs] == [0, 1]
    assert name not in unit_names(client)


# -- the live unit ---------------------------------------------------------------------------


def test_pool_unit_id_is_bytes_and_names_the_sandbox_unit(pool: TransientUnitPoolExecutor) -> None:
    uid = pool.unit.Id
    assert isinstance(uid, bytes)
    assert uid.decode().startswith("sandboxed-") and uid.decode().endswith(".service")
    assert uid.decode() == pool.unit.name


def test_pool_unit_reads_live_properties(pool: TransientUnitPoolExecutor) -> None:
    pool.submit(square, 2).result(timeout=30)
    assert pool.unit.ActiveState == b"active"
    assert isinstance(pool.unit.MainPID, int) and pool.unit.MainPID > 0
    mem = pool.unit.MemoryCurrent
    assert isinstance(mem, int) and 0 < mem < 2**63
    before = pool.unit.CPUUsageNSec
    assert isinstance(before, int) and 0 < before < 2**63
    pool.submit(nap, 0.0).result(timeout=30)
    list(pool.map(square, range(200)))
    assert pool.unit.CPUUsageNSec > before
    with pytest.raises(AttributeError):
        pool.unit.NoSuchProperty  # noqa: B018


# -- the seed example ------------------------------------------------------------------------


def test_the_seed_example_runs_as_written_within_its_cpu_quota(systemd: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SEED)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("bootstrap unit sandboxed-"), line
        unit = line.split()[-1]
        probe = CgroupProbe(unit, systemd.location, systemd.client)
        time.sleep(1.5)  # let all three tasks get going
        c0, t0 = cpu_seconds(probe), time.monotonic()
        time.sleep(3.0)
        c1, t1 = cpu_seconds(probe), time.monotonic()
        share = (c1 - c0) / (t1 - t0)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # Three busy loops together: held to 20 % of one CPU (and they do use it).
    assert 0.2 * 0.85 <= share <= 0.2 * 1.15, share


def test_the_seed_options_apply_to_the_pools_tasks(systemd: Any) -> None:
    def probe() -> dict[str, Any]:
        import socket

        return {
            "uid": os.getuid(),
            "ifaces": [n for _, n in socket.if_nameindex()],
            "etc_writable": os.access("/etc", os.W_OK),
        }

    opts = {
        "PrivateTmp": True,
        "PrivateNetwork": True,
        "CPUQuota": 0.2,
        "ProtectSystem": "strict",
        "User": "nobody",
    }
    with TransientUnitPoolExecutor(ns_options=opts) as p:
        got = p.submit(probe).result(timeout=60)
    assert got == {"uid": 65534, "ifaces": ["lo"], "etc_writable": False}


# -- PrivateTmp ------------------------------------------------------------------------------


def test_private_tmp_is_shared_by_the_pools_tasks_and_gone_after_exit(systemd: Any) -> None:
    name = f"sbx-pool-tmp-{uuid.uuid4().hex}"
    with TransientUnitPoolExecutor(2, ns_options={"PrivateTmp": True}) as p:
        unit = p.unit.name
        p.submit(write_tmp, name, "from task one").result(timeout=30)
        # Later tasks, in this or another worker, see it.
        assert [f.result(timeout=30) for f in [p.submit(read_tmp, name) for _ in range(3)]] == [
            "from task one"
        ] * 3
        assert not os.path.exists(f"/tmp/{name}")  # private: not the host's /tmp
        assert glob.glob(f"/tmp/systemd-private-*-{unit}-*/tmp/{name}")
    assert not glob.glob(f"/tmp/systemd-private-*-{unit}-*")
    with TransientUnitPoolExecutor(1, ns_options={"PrivateTmp": True}) as p:
        assert p.submit(read_tmp, name).result(timeout=30) is None


# -- workers that die ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "signal_name", "exit_code", "words"),
    [
        (die_by_sigkill, "SIGKILL", None, "killed by SIGKILL"),
        (die_by_exit, None, 3, "exited with status 3"),
        (die_by_segfault, "SIGSEGV", None, "killed by SIGSEGV"),
    ],
    ids=["sigkill", "os-exit", "segfault"],
)
def test_a_dying_worker_fails_only_its_future_and_the_pool_keeps_serving(
    pool: TransientUnitPoolExecutor,
    task: Any,
    signal_name: str | None,
    exit_code: int | None,
    words: str,
) -> None:
    unit = pool.unit.name
    bystander = pool.submit(nap, 0.5, "bystander")
    time.sleep(0.1)
    victim = pool.submit(task)
    exc = victim.exception(timeout=30)
    assert isinstance(exc, WorkerDiedError), repr(exc)
    assert not isinstance(exc, MemoryError)
    assert exc.signal == signal_name and exc.exit_code == exit_code
    assert words in str(exc) and unit in str(exc)
    assert bystander.result(timeout=30) == "bystander"
    # Replaced: the pool serves as many tasks at once as before, in the same unit.
    spans = [f.result(timeout=30) for f in [pool.submit(span, 0.3) for _ in range(2)]]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # they overlapped
    assert pool.unit.name == unit and pool.unit.ActiveState == b"active"


def test_many_threads_submitting_at_once_all_get_their_results(
    pool: TransientUnitPoolExecutor,
) -> None:
    results: dict[int, int] = {}

    def go(base: int) -> None:
        futs = {i: pool.submit(square, i) for i in range(base, base + 10)}
        for i, f in futs.items():
            results[i] = f.result(timeout=60)

    threads = [threading.Thread(target=go, args=(b * 10,)) for b in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * i for i in range(60)}


def test_a_worker_dying_mid_batch_fails_only_the_task_it_was_running() -> None:
    import tasks

    with TransientUnitPoolExecutor(1, User="nobody") as pool:
        pool.submit(tasks.square, 0).result(timeout=60)  # warm: later tasks queue up and batch
        blocker = pool.submit(tasks.nap, 0.5, "first")
        futs = [pool.submit(tasks.square, i) for i in range(10)]
        futs.append(pool.submit(tasks.die_by_exit))
        futs += [pool.submit(tasks.square, i) for i in range(10, 20)]
        assert blocker.result(timeout=60) == "first"
        for i, fut in enumerate(futs[:10]):
            assert fut.result(timeout=60) == i * i
        with pytest.raises(WorkerDiedError):
            futs[10].result(timeout=60)
        for i, fut in zip(range(10, 20), futs[11:], strict=True):
            assert fut.result(timeout=60) == i * i
