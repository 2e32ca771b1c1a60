"""``@sandboxed(...)``: turn a function into one that runs in a cached transient unit."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import types
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

import wrapt

from sandboxed import _context, _registry
from sandboxed._options import OptionSet
from sandboxed._sandbox import thread_last_stats
from sandboxed._stats import CallStats

P = ParamSpec("P")
R = TypeVar("R")

_local = threading.local()


def last_call_stats() -> CallStats | None:
    """Resource figures of the last sandboxed call made by this thread (or None)."""
    return getattr(_local, "stats", None)


def _import_by_name(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rebuild(wrapped: Callable[..., Any], options: OptionSet) -> SandboxedFunction:
    return SandboxedFunction(wrapped, options)


class SandboxedFunction(wrapt.FunctionWrapper[..., Any]):
    """A function that runs in a sandbox when called; otherwise it is the function.

    It pickles (for Dask, multiprocessing...) by reference when it is importable
    by name, by value (its function and options) otherwise, and runs directly
    when it is called inside a sandbox worker.
    """

    def __init__(self, wrapped: Callable[..., Any], options: OptionSet) -> None:
        is_async = inspect.iscoroutinefunction(wrapped)
        impl = _call_async if is_async else _call

        # The wrapper knows its own SandboxedFunction: the same plain function may be
        # decorated several times with different option sets.
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            return impl(self, wrapped, instance, args, kwargs)

        super().__init__(wrapped, wrapper)
        self._self_options = options
        self._self_local = threading.local()
        if is_async:
            # inspect cannot see through our class; asyncio's check still can.
            import asyncio.coroutines

            self._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]

    # A proxy normally reports the wrapped function's class. Pickler extensions
    # (cloudpickle, which Dask uses) then take it for a plain function and ship
    # the bare function by value: it would run unsandboxed wherever it lands.
    # Reporting our own class sends every pickler through __reduce_ex__ below.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self)

    @property
    def options(self) -> OptionSet:
        """The option set this function's sandbox is built from."""
        return self._self_options

    @property
    def last_stats(self) -> CallStats | None:
        """Resource figures of this function's last call in this thread."""
        return getattr(self._self_local, "stats", None)

    @property
    def sandbox(self) -> Any:
        """The shared :class:`Sandbox` (unit and workers) this function runs in."""
        return _registry.get(self._self_options)

    def __reduce_ex__(self, protocol: Any) -> Any:
        wrapped = self.__wrapped__
        module = getattr(wrapped, "__module__", None)
        qualname = getattr(wrapped, "__qualname__", "")
        if module and module != "__main__" and "<" not in qualname:
            try:
                if _import_by_name(module, qualname) is self:
                    return _import_by_name, (module, qualname)
            except Exception:  # fall back to by value
                pass
        return _rebuild, (wrapped, self._self_options)


def _target(owner: SandboxedFunction, wrapped: Any, instance: Any) -> Any:
    """What to send to the worker: something that pickles and runs the plain function there.

    A plain function goes as its SandboxedFunction (by reference when importable, so that
    recursion and module globals resolve there); a bound method as ``getattr(instance, name)``.
    """
    if instance is None:
        return owner if owner.__wrapped__ is wrapped else wrapped
    if inspect.ismethod(wrapped):
        return wrapped
    # Called through the class (``C.method(obj, x)``): wrapt hands us a partial object
    # proxy, which does not pickle; the same bound method does.
    return types.MethodType(owner.__wrapped__, instance)


def _call(
    owner: SandboxedFunction,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if _context.IN_WORKER:
        return wrapped(*args, **kwargs)
    sb = _registry.get(owner._self_options)
    target = _target(owner, wrapped, instance)
    try:
        return sb.call(target, args, kwargs, timeout=owner._self_options.timeout)
    finally:
        _record(owner, thread_last_stats())


async def _call_async(
    owner: SandboxedFunction,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if _context.IN_WORKER:
        return await wrapped(*args, **kwargs)
    sb = _registry.get(owner._self_options)
    target = _target(owner, wrapped, instance)
    lock = threading.Lock()
    cancels: list[Callable[[], None]] = []
    cancelled = False

    def on_start(cancel: Callable[[], None]) -> None:
        # The task may be cancelled before the call got its worker: kill it at once then.
        with lock:
            cancels.append(cancel)
            now = cancelled
        if now:
            cancel()

    stats: list[CallStats | None] = []

    def run() -> Any:
        try:
            return sb.call(
                target, args, kwargs, timeout=owner._self_options.timeout, on_start=on_start
            )
        finally:
            # Stats are per thread: take them in the thread that made the call.
            stats.append(thread_last_stats())

    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, run)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with lock:
            cancelled = True
            started = list(cancels)
        for c in started:
            c()
        # Nobody awaits the inner future any more: retrieve its outcome so asyncio
        # does not log "exception was never retrieved".
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
    finally:
        _record(owner, stats[0] if stats else None)


def _record(owner: SandboxedFunction, stats: CallStats | None) -> None:
    owner._self_local.stats = stats
    _local.stats = stats


def _wrap(fn: Callable[..., Any], options: OptionSet) -> Any:
    if isinstance(fn, (classmethod, staticmethod)):
        inner = _wrap(fn.__func__, options)
        return type(fn)(inner)
    return SandboxedFunction(fn, options)


@overload
def sandboxed(__fn: Callable[P, R]) -> Callable[P, R]: ...


@overload
def sandboxed(*presets: Any, **options: Any) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def sandboxed(*presets: Any, **options: Any) -> Any:
    """Run every call of the decorated function in a systemd transient unit.

    ``presets`` are :class:`Preset` objects (``NoNetwork``, ``ReadOnly``...);
    keyword arguments are systemd directives in their unit-file spelling
    (``CPUQuota=0.2``, ``MemoryMax="512M"``) or sandboxed's own options
    (``timeout``, ``trusted``, ``workers``, ``ns_options``). Keyword
    directives override presets (recorded in ``fn.options.overrides``).

    Works on functions, nested functions, lambdas, methods, classmethods,
    staticmethods and ``async def`` functions (which return awaitables).

    Raises (when decorating, before any unit exists): :class:`UnknownDirectiveError`,
    :class:`InvalidDirectiveValueError`, :class:`ConflictingDirectivesError`.
    """
    if len(presets) == 1 and not options and _is_target(presets[0]):
        return _wrap(presets[0], OptionSet.build())
    built = OptionSet.build(*presets, **options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _wrap(fn, built)  # type: ignore[no-any-return]

    return decorate


def _is_target(obj: Any) -> bool:
    return (
        inspect.isfunction(obj) or isinstance(obj, (classmethod, staticmethod))
    ) and not hasattr(obj, "directives")


def run(fn: Callable[..., Awaitable[R]] | Callable[..., R], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` once in a default sandbox (no options). Mostly for quick tests."""
    return _registry.get(OptionSet.build()).call(fn, args, kwargs)
