"""``@sandboxed(...)``: turn a function into one that runs in a cached transient unit."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import threading
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


class SandboxedFunction(wrapt.FunctionWrapper):  # type: ignore[misc]
    """A function that runs in a sandbox when called; otherwise it is the function.

    It pickles (for Dask, multiprocessing...) by reference when it is importable
    by name, by value (its function and options) otherwise, and runs directly
    when it is called inside a sandbox worker.
    """

    def __init__(self, wrapped: Callable[..., Any], options: OptionSet) -> None:
        is_async = inspect.iscoroutinefunction(wrapped)
        super().__init__(wrapped, _call_async if is_async else _call)
        self._self_options = options
        self._self_local = threading.local()

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
            except Exception:  # noqa: BLE001 - fall back to by value
                pass
        return _rebuild, (wrapped, self._self_options)


def _target(wrapped: Any, instance: Any) -> Any:
    """What to send to the worker: something that pickles and runs the plain function there."""
    if instance is None:
        me = getattr(wrapped, "_sandboxed_wrapper", None)
        return me if me is not None else wrapped
    return wrapped  # a bound method: pickled as getattr(instance, name)


def _sandbox_of(self_wrapper: Any) -> Any:
    return _registry.get(self_wrapper._self_options)


def _owner(wrapped: Any) -> SandboxedFunction | None:
    return getattr(wrapped, "_sandboxed_wrapper", None)


def _call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _context.IN_WORKER:
        return wrapped(*args, **kwargs)
    owner = _owner(wrapped if instance is None else getattr(wrapped, "__func__", wrapped))
    assert owner is not None
    sb = _registry.get(owner._self_options)
    target = owner if instance is None and owner.__wrapped__ is wrapped else wrapped
    try:
        return sb.call(target, args, kwargs)
    finally:
        _record(owner, sb)


async def _call_async(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if _context.IN_WORKER:
        return await wrapped(*args, **kwargs)
    owner = _owner(wrapped if instance is None else getattr(wrapped, "__func__", wrapped))
    assert owner is not None
    sb = _registry.get(owner._self_options)
    target = owner if instance is None and owner.__wrapped__ is wrapped else wrapped
    cancel: list[Callable[[], None]] = []
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(
        None, functools.partial(sb.call, target, args, kwargs, on_start=cancel.append)
    )
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        for c in cancel:
            c()
        raise
    finally:
        _record(owner, sb)


def _record(owner: SandboxedFunction, sb: Any) -> None:
    stats = thread_last_stats()
    owner._self_local.stats = stats
    _local.stats = stats


def _wrap(fn: Callable[..., Any], options: OptionSet) -> Any:
    if isinstance(fn, (classmethod, staticmethod)):
        inner = _wrap(fn.__func__, options)
        return type(fn)(inner)
    wrapper = SandboxedFunction(fn, options)
    # Lets _call find its wrapper from the plain function (also for bound methods).
    try:
        fn._sandboxed_wrapper = wrapper  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    return wrapper


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
