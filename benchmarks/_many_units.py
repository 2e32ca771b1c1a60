"""One benchmark probe in a process of its own: many option sets, one after another.

``python _many_units.py N SOFT_LIMIT`` lowers this process's descriptor limit to
SOFT_LIMIT, creates N option sets one after another (a decorated no-op each, called
once) and prints one JSON line: how many succeeded, the first error, each first call's
time, and the descriptors, memory and live units at the end. Each option set's unit
is started fresh (a unique environment); the sandbox cache bounds how many live.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def noop() -> None:
    return None


def main() -> int:
    n, soft = int(sys.argv[1]), int(sys.argv[2])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    import sandboxed
    from sandboxed import NoNetwork

    ok = 0
    error = ""
    firsts: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        fn = sandboxed.sandboxed(NoNetwork, env={"SANDBOXED_BENCH_MANY": f"{os.getpid()}-{i}"})(
            noop
        )
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the first failure is the figure
            error = f"option set {i + 1}: {type(exc).__name__}: {exc}"[:300]
            break
        firsts.append(time.perf_counter() - t)
        ok += 1
    total = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    from sandboxed.runtime import registry

    live = sum(1 for sb in registry.live() if sb.unit_name is not None)
    print(
        json.dumps(
            {
                "ok": ok,
                "error": error,
                "firsts": firsts,
                "total": total,
                "fds": len(os.listdir("/proc/self/fd")),
                "rss": rss,
                "live": live,
            }
        )
    )
    sandboxed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
