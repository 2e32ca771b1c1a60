#!/usr/bin/env python3
"""I/O-bound calls from many threads: the decorator's default worker count, side by side.

Eight threads each make one call that sleeps 0.5 s (waiting, not computing).
Printed: the wall time for the old default (``min(4, CPUs)`` workers), the
current default (``min(32, CPUs + 4)``), and ``workers=8``, each measured in
alternating rounds on warm units, with their ratio to an ideal 0.5 s.

    python benchmarks/io_bound.py [--rounds N] [--threads N] [--sleep S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

from sandboxed import sandboxed, shutdown
from sandboxed.runtime.pool import default_workers


def nap(seconds: float) -> None:
    time.sleep(seconds)


def wall(fn: object, threads: int, seconds: float) -> float:
    ts = [threading.Thread(target=fn, args=(seconds,)) for _ in range(threads)]  # type: ignore[arg-type]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=0.5)
    a = ap.parse_args()
    cpus = os.cpu_count() or 1
    contenders = {
        f"old default: min(4, CPUs) = {min(4, cpus)}": sandboxed(workers=min(4, cpus))(nap),
        f"default: min(32, CPUs + 4) = {default_workers()}": sandboxed()(nap),
        f"workers={a.threads}": sandboxed(workers=a.threads)(nap),
    }
    for fn in contenders.values():
        wall(fn, a.threads, 0.0)  # start the unit and fork the workers
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(a.rounds):
        for name, fn in contenders.items():
            times[name].append(wall(fn, a.threads, a.sleep))
    print(f"{a.threads} threads x one {a.sleep} s sleep each, {cpus} CPUs, {a.rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<36} {med:6.2f} s  ({med / a.sleep:4.1f}x the sleep)")
    shutdown()


if __name__ == "__main__":
    main()
