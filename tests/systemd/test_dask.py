"""A decorated function submitted to a dask.distributed cluster runs sandboxed on its worker.

Each Dask worker process creates its own unit (its pid is in the unit's
name), so the sandbox is wherever the task runs, not where it was submitted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from sandboxed import NoNetwork, sandboxed

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.systemd


@sandboxed(NoNetwork, User="nobody")
def where_am_i(n: int) -> dict[str, Any]:
    """Runs in the sandbox: what it sees of itself."""
    with open("/proc/self/cgroup") as f:
        units = {p for line in f for p in line.strip().split("/") if p.endswith(".service")}
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1)
        network = "reachable"
    except OSError as e:
        network = type(e).__name__
    return {"n": n * n, "uid": os.getuid(), "units": sorted(units), "network": network}


def _worker_pid() -> int:
    return os.getpid()


@pytest.fixture(scope="module")
def client(systemd: object) -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_decorated_function_runs_sandboxed_on_each_worker_in_a_unit_of_its_own(
    client: Any,
) -> None:
    pids = client.run(_worker_pid)  # worker address -> pid of the worker process
    assert len(pids) == 2
    futures = {
        addr: client.submit(where_am_i, i, workers=[addr], pure=False)
        for i, addr in enumerate(sorted(pids))
    }
    results = {addr: f.result(timeout=120) for addr, f in futures.items()}
    for i, addr in enumerate(sorted(pids)):
        r = results[addr]
        assert r["n"] == i * i
        assert r["uid"] == 65534  # User=nobody
        assert r["network"] != "reachable"  # NoNetwork
        (unit,) = r["units"]
        # sandboxed-<key>-<caller pid>-<rand>.service: the caller is that Dask worker
        assert unit.startswith("sandboxed-") and f"-{pids[addr]}-" in unit
    units = {results[a]["units"][0] for a in pids}
    assert len(units) == 2


def test_map_over_the_cluster_returns_every_result(client: Any) -> None:
    results = client.gather(client.map(where_am_i, range(8), pure=False))
    assert [r["n"] for r in results] == [i * i for i in range(8)]
    assert {r["uid"] for r in results} == {65534}


def test_a_by_value_function_runs_sandboxed_too(client: Any) -> None:
    # A lambda cannot be imported by name on the worker: it must travel by value,
    # options included.
    def probe(x: int) -> tuple[int, list[str]]:
        with open("/proc/self/cgroup") as f:
            units = sorted({p for ln in f for p in ln.strip().split("/") if p.endswith(".service")})
        return x * x, units

    square = sandboxed(NoNetwork)(probe)
    n, units = client.submit(square, 7, pure=False).result(timeout=120)
    assert n == 49
    assert units and units[0].startswith("sandboxed-")
