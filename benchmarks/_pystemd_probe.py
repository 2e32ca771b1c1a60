"""Measure pystemd.futures.TransientUnitPoolExecutor in a process of its own.

run.py starts this with a timeout (pystemd's executor is known to hang waiting for
the unit's activation), through the manager's tool prefix: pystemd moves its forked
workers into the unit by PID (``AttachProcesses``, ``/proc/MainPID/ns``), which is
only right inside the manager's own PID namespace. It prints one JSON object: the
first result's time, warm call latencies, or the error it met and at which step.
"""

from __future__ import annotations

import json
import os
import sys
import time

step = "import"


def report(**fields: object) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def main() -> None:
    global step
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_tasks as tasks

    try:
        import pystemd
        from pystemd.futures import TransientUnitPoolExecutor
    except Exception as exc:  # noqa: BLE001
        report(error=f"cannot import pystemd.futures: {type(exc).__name__}: {exc}")
        return
    step = "start the pool"
    t0 = time.perf_counter()
    try:
        # The same isolation as the other contenders' cold start: no network, read-only /.
        pool = TransientUnitPoolExecutor(
            {b"PrivateNetwork": True, b"ProtectSystem": b"strict"}, max_workers=1
        )
        pool.__enter__()  # starts the unit (and waits for its activation)
    except Exception as exc:  # noqa: BLE001
        report(error=f"{type(exc).__name__}: {exc}", version=getattr(pystemd, "__version__", "?"))
        return
    try:
        step = "first result"
        pool.submit(tasks.noop).result()
        first = time.perf_counter() - t0
        report(first=first, partial=True)
        step = "warm calls"
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            pool.submit(tasks.noop).result()
            lat.append(time.perf_counter() - t)
        report(first=first, warm=lat, version=getattr(pystemd, "__version__", "?"))
    except Exception as exc:  # noqa: BLE001
        report(error=f"{type(exc).__name__}: {exc}")
    finally:
        step = "shutdown"
        pool.__exit__(None, None, None)


if __name__ == "__main__":
    main()
