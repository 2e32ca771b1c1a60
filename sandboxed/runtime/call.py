"""One call, from the caller's side: send it to a worker, read its frames, return or raise.

This is the hot path of a warm call: one ``sendmsg``, a few ``recv``s, and the
cgroup figures around it when accounting is on. Everything the worker sends is
untrusted input.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sandboxed._errors import (
    PayloadTooLargeError,
    ProtocolError,
    ResourceLimitError,
    SandboxMemoryError,
    SandboxTimeoutError,
    WorkerDiedError,
)
from sandboxed.runtime import relay
from sandboxed.runtime import stats as _stats
from sandboxed.runtime.channel import (
    END_WAIT,
    START_TIMEOUT,
    UnitChannel,
    WorkerChannel,
    describe_status,
)
from sandboxed.runtime.plan import directive_value
from sandboxed.systemd.cgroups import CgroupProbe
from sandboxed.wire import codec, frames, serial
from sandboxed.wire.framing import (
    DEFAULT_LIMIT,
    LENGTH,
    FrameType,
    recv_frame_by,
    recv_parts_by,
    send_frame,
)

KILL_GRACE = 1.0


FUNCTIONS_SHIPPED = 0
"""By-value functions sent to a worker in full so far (the others went by digest)."""


class Pool(Protocol):
    """What a call needs of the sandbox it runs in (:class:`sandboxed.runtime.pool.Sandbox`)."""

    options: Any
    tasks_limited: bool
    last_stats: _stats.CallStats | None
    functions_apart: bool

    def check_reachable(self, fn: Callable[..., Any]) -> None: ...
    def acquire(self, fresh: bool = False) -> WorkerChannel: ...
    def release(self, w: WorkerChannel, healthy: bool) -> None: ...
    def recycle(self, unit: UnitChannel) -> None: ...


class _Flag:
    """A one-way flag (a threading.Event costs a lock and a condition per call)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


@functools.lru_cache(maxsize=64)
def _call_header(safe: bool, log_level: int, ack: bool) -> bytes:
    """The CALL frame's header part; encoded once per combination (the worker caches it too)."""
    return codec.encode(dict(zip(frames.CALL_HEADER, (safe, log_level, ack), strict=True)))


def run(
    pool: Pool,
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    on_start: Callable[[Callable[[], None]], None] | None,
    accounting: bool,
    on_partial: Callable[[int, bool, list[bytearray]], None] | None,
    fresh: bool = False,
) -> Any:
    """Run one call in a worker of ``pool`` (see :meth:`Sandbox.call`)."""
    _stats.record(None)
    pool.check_reachable(fn)
    opts = pool.options
    safe = bool(getattr(opts, "safe_results", False))
    if timeout is None:
        timeout = getattr(opts, "timeout", None)
    limit = int(getattr(opts, "max_payload", 0) or DEFAULT_LIMIT)
    shipped = serial.by_value_function(fn) if pool.functions_apart else None
    parts = serial.dumps_call(fn, args, kwargs, by_value=shipped)
    size = sum(memoryview(p).nbytes for p in parts)
    if shipped is not None:
        size += len(shipped.stream)
    if size > limit:
        raise PayloadTooLargeError("call (function and arguments)", size, limit)
    w = pool.acquire(fresh)
    # A fresh worker's first call is acknowledged when it starts, so that a worker that
    # dies loading (out of memory) is told from a call that dies running.
    header = _call_header(
        safe, logging.getLogger().getEffectiveLevel(), timeout is not None or not w.calls
    )
    healthy = False
    cancelled = _Flag()
    started = _Flag()
    if on_start is not None:

        def cancel() -> None:
            cancelled.set()
            with contextlib.suppress(Exception):
                w.kill(signal.SIGKILL)

        on_start(cancel)
    probe = w.unit.probe if accounting else None
    before = None
    if probe is not None:
        before = probe.snapshot_with_pids() if pool.tasks_limited else probe.snapshot()
    t0 = time.monotonic()
    try:
        resent = False
        try:
            if shipped is None:
                send_frame(w.sock, FrameType.CALL, [header, *parts])
            else:
                _send_apart(w, header, shipped, parts, w.functions.has(shipped.digest))
        except OSError:
            raise _died(pool, w, cancelled, started) from None

        def on_unknown(digest: bytes) -> None:
            # The worker does not have (or says it does not have) the function we named:
            # send it once more, in full. Anything else is a broken or hostile worker.
            nonlocal resent
            if shipped is None or resent or digest != shipped.digest:
                raise ProtocolError("the worker asked for a function it was never sent")
            resent = True
            w.functions.forget(shipped.digest)
            try:
                _send_apart(w, header, shipped, parts, False)
            except OSError as e:
                raise EOFError("the channel closed while the function was resent") from e

        try:
            kind, reply = _replies(w, opts, t0, timeout, limit, on_partial, on_unknown, started)
        except TimeoutError:
            _stop_worker(w)
            raise SandboxTimeoutError(float(timeout), w.unit.name) from None  # type: ignore[arg-type]
        except ProtocolError as e:
            _stop_worker(w)
            raise WorkerDiedError(
                w.unit.name, f"the worker broke the protocol and was stopped: {e}"
            ) from None
        except (EOFError, ConnectionError):
            raise _died(pool, w, cancelled, started) from None
        healthy = True
        w.calls += 1
        _record(pool, probe, before, t0)
        budget = getattr(opts, "max_decoded", None) if safe else None
        if kind == FrameType.RESULT:
            return serial.loads_result(reply[0], reply[1:], safe=safe, max_size=budget)
        raise serial.loads_exception(reply[0], reply[1:], safe=safe, max_size=budget)
    except PayloadTooLargeError:
        _stop_worker(w)
        raise
    except BaseException as e:
        limit_error = _tasks_limit_hit(pool, w, probe, before, e)
        if limit_error is not None:
            healthy = False
            raise limit_error from e
        raise
    finally:
        if healthy and probe is not None and before is not None and _tasks_hit(pool, probe, before):
            # Processes forked up to TasksMax= may still run: recycle the unit.
            healthy = False
            pool.recycle(w.unit)
        pool.release(w, healthy and not fresh)


def _send_apart(
    w: WorkerChannel,
    header: bytes,
    shipped: serial.ByValueFunction,
    parts: list[serial.Buffer],
    known: bool,
) -> None:
    """A CALL whose by-value function travels apart: in full, or by digest if ``known``."""
    global FUNCTIONS_SHIPPED
    stream = b"" if known else shipped.stream
    send_frame(
        w.sock,
        FrameType.CALL,
        [header, shipped.digest, stream, *parts],
        flags=frames.FUNCTION_APART,
    )
    if not known:
        w.functions.add(shipped.digest)
        FUNCTIONS_SHIPPED += 1


def _replies(
    w: WorkerChannel,
    opts: Any,
    t0: float,
    timeout: float | None,
    limit: int,
    on_partial: Callable[[int, bool, list[bytearray]], None] | None,
    on_unknown: Callable[[bytes], None],
    started: _Flag,
) -> tuple[FrameType, list[bytearray]]:
    """Read the worker's frames for one call until its RESULT or ERROR: (type, parts).

    Everything here comes from the sandbox's code. One absolute deadline holds for
    every byte read: START_TIMEOUT + timeout after the call was sent, brought forward
    to ``timeout`` after the worker's first STARTED (later ones are ignored: STARTED
    can only ever bring the deadline closer). A frame not complete by then is a
    TimeoutError, however its bytes trickle in. OUTPUT is streamed out as it arrives;
    LOG records are re-emitted as data (:mod:`sandboxed.runtime.relay`); a frame no
    call expects is a ProtocolError.
    """
    sock = w.sock
    unit = w.unit.name
    prefix = getattr(opts, "log_prefix", relay.DEFAULT_PREFIX)
    deadline = None if timeout is None else t0 + START_TIMEOUT + float(timeout)
    output = relay.CallOutput(raw=bool(getattr(opts, "raw_output", False)))
    try:
        while True:
            kind, _flags, nparts, total = recv_frame_by(sock, deadline, limit)
            if kind == FrameType.RESULT or kind == FrameType.ERROR:
                return kind, recv_parts_by(sock, nparts, total, deadline)
            if kind == FrameType.OUTPUT:
                output.frame(sock, nparts, total, deadline)
            elif kind == FrameType.LOG:
                if total > relay.MAX_LOG_FRAME or nparts != 1:
                    relay.drain(sock, LENGTH.size * nparts + total, deadline)
                    relay.dropped(f"a log frame of {total} bytes", prefix, unit)
                else:
                    data = recv_parts_by(sock, 1, total, deadline)[0]
                    relay.emit(data, prefix, unit, getattr(opts, "key", ""))
            elif kind == FrameType.STARTED:
                if nparts:
                    raise ProtocolError("a STARTED frame with parts")
                if not started.is_set() and deadline is not None and timeout is not None:
                    deadline = min(deadline, time.monotonic() + float(timeout))
                started.set()
            elif kind == FrameType.UNKNOWN_FUNCTION and nparts == 1 and total <= 64:
                on_unknown(bytes(recv_parts_by(sock, 1, total, deadline)[0]))
            elif kind == FrameType.PARTIAL and on_partial is not None and nparts:
                reply = recv_parts_by(sock, nparts, total, deadline)
                index, ok = frames.unpack(FrameType.PARTIAL, reply[0])
                on_partial(index, ok, reply[1:])
            else:
                raise ProtocolError(f"a {kind.name} frame, which no call expects")
    finally:
        output.close()
        if deadline is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(None)


def _tasks_hit(pool: Pool, probe: CgroupProbe, before: Any) -> bool:
    if not pool.tasks_limited:
        return False  # only an explicit TasksMax= is watched (a file read per call)
    try:
        return bool(probe.pids_limit_hits() > before.pids_hits)
    except Exception:  # noqa: BLE001
        return False


def _tasks_limit_hit(
    pool: Pool, w: WorkerChannel, probe: CgroupProbe | None, before: Any, err: BaseException
) -> ResourceLimitError | None:
    """A ResourceLimitError when ``err`` came with the unit hitting TasksMax=."""
    if probe is None or before is None or isinstance(err, ResourceLimitError):
        return None
    if not _tasks_hit(pool, probe, before):
        return None
    pool.recycle(w.unit)
    return ResourceLimitError(
        "TasksMax",
        directive_value(pool.options, "TasksMax"),
        f"the call tried to create more tasks than the unit allows ({err.__class__.__name__}: "
        f"{err}); the unit was stopped with everything it forked and the next call gets a "
        "fresh one",
    )


def _record(pool: Pool, probe: CgroupProbe | None, before: Any, t0: float) -> None:
    if probe is None or before is None:
        return
    with contextlib.suppress(Exception):
        figures = _stats.CallStats.of(probe.delta(before), time.monotonic() - t0, probe.unit)
        pool.last_stats = figures
        _stats.record(figures)


def _stop_worker(w: WorkerChannel) -> None:
    """Terminate, then kill, a worker whose call we abandon."""
    with contextlib.suppress(Exception):
        w.kill(signal.SIGTERM)
        if not w.exited.wait(KILL_GRACE):
            w.kill(signal.SIGKILL)
            w.exited.wait(KILL_GRACE)
    w.close()


def _died(pool: Pool, w: WorkerChannel, cancelled: _Flag, started: _Flag) -> BaseException:
    """The error for a call whose worker vanished."""
    unit = w.unit
    # Long enough for the control reader to learn from systemd why the unit ended.
    w.exited.wait(END_WAIT + 2.0)
    if cancelled.is_set():
        import asyncio

        return asyncio.CancelledError()
    status = w.status
    if status is None:
        if not unit.alive:
            reason = getattr(pool, "stop_reason", None)
            if reason is not None:
                return WorkerDiedError(
                    unit.name, f"the sandbox was shut down ({reason}) while the call was running"
                )
            memory = unit.memory_text()
            if memory is not None:
                limit = _memory_limit(pool.options)
                return SandboxMemoryError(unit.name, limit, "" if started.is_set() else memory)
            end = unit.end_text()
            return WorkerDiedError(
                unit.name,
                "the unit stopped while the call was running" + (f": {end}" if end else ""),
            )
        return WorkerDiedError(unit.name, "the channel to the worker closed unexpectedly")
    text, code, sig = describe_status(status)
    if sig == "SIGKILL" and unit.probe is not None and unit.probe.oom_killed():
        return SandboxMemoryError(unit.name, _memory_limit(pool.options))
    if sig == "SIGKILL":
        text += " (from outside the call: SIGKILL was sent to the worker)"
    return WorkerDiedError(unit.name, text, exit_code=code, signal=sig)


def _memory_limit(options: Any) -> int | None:
    for name in ("MemoryMax", "MemoryLimit"):
        value = directive_value(options, name)
        if isinstance(value, int):
            return value
    return None
