#!/usr/bin/env python3
"""Where a cold call's time goes: a timestamped trace, and ``-X importtime`` in the unit.

``python benchmarks/cold_trace.py [main|importable]`` makes one first call of a new
option set (``NoNetwork | ReadOnly``) with a no-op defined in this script (``main``,
by value) or imported from a module, after a warm-up call of another option set (so
that the caller's own lazy imports are not counted), and prints:

- the caller's steps with their times since the call began (pickling, the
  StartTransientUnit round trip, the supervisor's READY, SPAWN, the CALL frame and
  the result), taken by wrapping those steps;
- the imports of the unit's supervisor (read from its diagnostics channel) and of
  the worker during its first call (its stderr comes back as the call's output),
  from ``PYTHONPROFILEIMPORTTIME=1`` in the unit's environment.

A diagnostic tool, not a benchmark: run it on a quiet machine, and more than once.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_tasks as tasks  # noqa: E402

import sandboxed  # noqa: E402
from sandboxed import NoNetwork, ReadOnly  # noqa: E402
from sandboxed.runtime import call, channel  # noqa: E402
from sandboxed.systemd import bus  # noqa: E402
from sandboxed.wire import serial  # noqa: E402

T0 = [0.0]
EVENTS: list[tuple[float, str]] = []


def mark(what: str) -> None:
    EVENTS.append((time.perf_counter() - T0[0], what))


def wrap(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label} begins")
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{label} ends")

    setattr(owner, name, wrapper)


def frames_traced() -> None:
    for module in (call, channel):
        recv, send = module.recv_frame, module.send_frame

        def traced_recv(*a: Any, _recv: Callable[..., Any] = recv, **k: Any) -> Any:
            result = _recv(*a, **k)
            mark(f"frame {result[0].name} received")
            return result

        def traced_send(sock: Any, kind: Any, *a: Any, _send: Any = send, **k: Any) -> Any:
            mark(f"frame {kind.name} sent")
            return _send(sock, kind, *a, **k)

        module.recv_frame = traced_recv  # type: ignore[attr-defined]
        module.send_frame = traced_send  # type: ignore[attr-defined]


def main_noop() -> None:
    """A no-op defined in ``__main__``: it travels by value."""
    return None


def importtime(text: str, label: str) -> None:
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    ]
    total = sum(int(line.split("|")[0].split(":")[1]) for line in rows)
    print(f"\n{label}: {len(rows)} modules, {total / 1000:.1f} ms of import time")
    rows.sort(key=lambda line: -int(line.split("|")[1]))
    for line in rows[:8]:
        print("   ", line)


def run(which: str) -> None:
    target = main_noop if which == "main" else tasks.noop
    sandboxed.sandboxed(NoNetwork, env={"TRACE_WARMUP": str(time.time())})(target)()
    fn = sandboxed.sandboxed(
        NoNetwork,
        ReadOnly,
        env={"PYTHONPROFILEIMPORTTIME": "1", "TRACE": str(time.time())},
    )(target)
    wrap(serial, "by_value_function", "by-value pickling")
    wrap(serial, "dumps_call", "call pickling")
    wrap(bus.ManagerClient, "start_transient_unit", "StartTransientUnit")
    wrap(channel.UnitChannel, "start", "unit start (until READY)")
    frames_traced()
    worker_err = io.StringIO()
    T0[0] = time.perf_counter()
    mark("call")
    with contextlib.redirect_stderr(worker_err):
        fn()
    mark("returned")
    print(f"a cold call of a {'__main__' if which == 'main' else 'importable'} no-op:")
    for t, what in EVENTS:
        print(f"{t * 1e3:8.1f} ms  {what}")
    unit = fn.sandbox._unit  # noqa: SLF001 - a diagnostic reads the unit's channel
    supervisor = b""
    if unit is not None and unit.diag is not None:
        unit.diag.setblocking(False)
        with contextlib.suppress(OSError):
            while chunk := unit.diag.recv(1 << 16):
                supervisor += chunk
    importtime(supervisor.decode(errors="replace"), "the supervisor (to READY, then preloads)")
    importtime(worker_err.getvalue(), "the worker, during its first call")
    sandboxed.shutdown()


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "main")
