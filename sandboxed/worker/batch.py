"""Several calls in one round trip: what the executor sends a worker when tasks queue up.

:func:`run_batch` runs in the worker (it is pickled by reference, so this module
must stay light: the worker imports it on the first batch). Each call's outcome
is packaged on its own with :mod:`sandboxed.wire.serial`, exactly as a single call's
would be, so one unpicklable result or exception fails only its own task:
``(True, result_parts)`` or ``(False, exception_parts)``. :func:`unpack` turns an
outcome back into a value or an exception in the caller, checking its shape
first (in safe mode the list comes from untrusted code).
"""

from __future__ import annotations

from sandboxed._errors import RemoteError
from sandboxed.wire import serial

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

Outcome = tuple[bool, list[bytes]]


def _plain(parts: Sequence[Any]) -> list[bytes]:
    # Buffers a pickler handed out-of-band (numpy data) travel as bytes inside the batch.
    return [p if type(p) is bytes else bytes(p) for p in parts]


def _run_one(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    if hasattr(type(value), "__await__") or type(value).__name__ == "generator":
        import inspect

        if inspect.isawaitable(value):
            import asyncio

            async def wait() -> Any:
                return await value

            value = asyncio.run(wait())
    return value


def run_batch(
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]], safe: bool
) -> list[Outcome]:
    """Run each call in turn; never raises for a call's error.

    In a worker each outcome is streamed to the caller as soon as its call ends
    (so a worker that dies mid-batch fails only the call it was running, and
    the caller knows which calls never started); the return value is then
    empty. Elsewhere the outcomes are returned, one per call.
    """
    from sandboxed import _context

    stream = _context.send_partial
    out: list[Outcome] = []
    for index, (fn, args, kwargs) in enumerate(calls):
        try:
            value = _run_one(fn, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - each task's error goes back to it
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
                exc.__traceback__ = exc.__traceback__.tb_next  # start in the user's code
            outcome: Outcome = (False, _plain(serial.dumps_exception(exc, safe=safe)))
        else:
            try:
                outcome = (True, _plain(serial.dumps_result(value, safe=safe)))
            except BaseException as exc:  # noqa: BLE001
                outcome = (False, _plain(serial.dumps_exception(exc, safe=safe)))
            del value
        if stream is not None:
            stream(index, outcome[0], outcome[1])
        else:
            out.append(outcome)
    return out


def unpack(outcome: object, safe: bool) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, exception)`` from one outcome of :func:`run_batch`."""
    if (
        type(outcome) is not tuple
        or len(outcome) != 2
        or type(outcome[0]) is not bool
        or type(outcome[1]) is not list
        or not outcome[1]
        or not all(type(p) is bytes for p in outcome[1])
    ):
        return False, RemoteError("<unknown>", "the worker sent a malformed batch outcome")
    ok, parts = outcome
    if ok:
        try:
            return True, serial.loads_result(parts[0], parts[1:], safe=safe)
        except Exception as exc:  # noqa: BLE001 - the task's own error, as for a single call
            return False, exc
    return False, serial.loads_exception(parts[0], parts[1:], safe=safe)


_initialized: dict[str, BaseException | None] = {}


def initialized(
    token: str,
    init: Callable[..., object],
    initargs: Sequence[Any],
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` after the pool's ``init(*initargs)`` ran in this worker.

    The initializer runs once per worker (``token`` names the pool); if it failed, every
    task of that worker fails with its error, as ProcessPoolExecutor's tasks do.
    """
    if token not in _initialized:
        try:
            init(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to each task below
            _initialized[token] = exc
        else:
            _initialized[token] = None
    failed = _initialized[token]
    if failed is not None:
        name = getattr(init, "__qualname__", repr(init))
        raise RuntimeError(
            f"the pool's initializer {name} failed in this worker: "
            f"{type(failed).__name__}: {failed}"
        ) from failed
    return fn(*args, **kwargs)


def process_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    """``Executor.map`` with ``chunksize > 1``: one call runs a chunk of argument tuples."""
    return [fn(*args) for args in chunk]
