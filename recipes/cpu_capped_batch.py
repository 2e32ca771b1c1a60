"""A CPU-capped batch with the executor: many tasks, one budget.

``TransientUnitPoolExecutor`` is a ``concurrent.futures.Executor`` whose
workers all live in one transient unit. Directives on the unit bound the
whole batch together: here ``CPUQuota=50%`` means the batch never takes more
than half of one CPU, however many workers run, so a batch job can share a
machine with latency-sensitive services. Each future carries the resource
figures of its task (``future.stats``).

Run: python recipes/cpu_capped_batch.py
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import as_completed

from sandboxed import NoNetwork, TransientUnitPoolExecutor


def checksum(seed: int, rounds: int = 40_000) -> str:
    """A small CPU-bound task: iterated SHA-256."""
    h = str(seed).encode()
    for _ in range(rounds):
        h = hashlib.sha256(h).digest()
    return h.hex()[:16]


def busy(seconds: float) -> float:
    """Spin for ``seconds`` of wall time; returns how long it spun."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        pass
    return time.monotonic() - t0


def main() -> None:
    with TransientUnitPoolExecutor(4, NoNetwork, CPUQuota=0.5, User="nobody") as pool:
        print("batch unit:", pool.unit.Id.decode())

        # map() keeps the input order; chunksize sends several calls per round trip.
        digests = list(pool.map(checksum, range(16), chunksize=4))
        print("16 checksums:", digests[:3], "...")
        assert digests == [checksum(i) for i in range(16)]  # same results as locally

        # Four workers spin for 2 s each, in parallel: without the quota that is 8 s of
        # CPU in 2 s of wall time. With CPUQuota=50% the unit gets at most 1 s of CPU.
        cpu_before = pool.unit.CPUUsageNSec
        t0 = time.monotonic()
        futures = [pool.submit(busy, 2.0) for _ in range(4)]
        for f in as_completed(futures):
            f.result()
        wall = time.monotonic() - t0
        cpu_after = pool.unit.CPUUsageNSec
        stats = futures[0].stats
        print(f"4 busy tasks: {wall:.1f} s wall; per-task stats of the first: {stats}")
        if cpu_before < 2**63 and cpu_after < 2**63:  # the manager does CPU accounting
            cpu = (cpu_after - cpu_before) / 1e9
            print(f"unit CPU time: {cpu:.2f} s = {cpu / wall:.0%} of one CPU (quota 50%)")
            assert cpu / wall < 0.5 * 1.15
        elif stats is not None:
            # Each task's figures cover the whole unit during that task.
            print(f"unit CPU time: {stats.cpu_time:.2f} s = {stats.cpu_time / wall:.0%} of one CPU")
            assert stats.cpu_time / stats.wall_time < 0.5 * 1.15
    print("batch done; the unit is gone")


if __name__ == "__main__":
    main()
