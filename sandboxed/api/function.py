"""``SandboxedFunction``: the wrapper ``@sandboxed`` puts around a function (caller side).

It lives apart from :mod:`sandboxed.api.decorator` because it needs wrapt (and wrapt
needs asyncio): a worker importing a module that defines sandboxed functions
gets the plain functions and never loads this module.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wrapt

from sandboxed import _context
from sandboxed._errors import trim
from sandboxed.runtime import stats as _stats

if TYPE_CHECKING:
    from sandboxed.directives.options import OptionSet
    from sandboxed.runtime.pool import Sandbox
    from sandboxed.runtime.stats import CallStats


def _registry_get(options: OptionSet) -> Sandbox:
    # The registry (and with it D-Bus, units and cgroups) loads on the first call.
    from sandboxed.runtime import registry

    return registry.get(options)


def _import_by_name(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rebuild(wrapped: Callable[..., Any], options: OptionSet) -> SandboxedFunction | Any:
    """Unpickle a sandboxed function sent by value (Dask, multiprocessing...)."""
    if _context.IN_WORKER:
        return wrapped
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
            __tracebackhide__ = True  # pytest and IPython leave this frame out
            try:
                return impl(self, wrapped, instance, args, kwargs)
            except BaseException as e:
                trim(e)
                raise

        super().__init__(wrapped, wrapper)
        self._self_options = options
        self._self_local = threading.local()
        self._self_byref: bool | None = None
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
        return _registry_get(self._self_options)

    def describe(self) -> str:
        """Each directive with its origin, then what was chosen for this host and why.

        Connects to the service manager (the choices depend on its version). Raises
        what building the sandbox raises (:class:`~sandboxed.UnenforceableDirectiveError`).
        """
        return str(self.sandbox.describe())

    def _by_reference(self) -> tuple[str, str] | None:
        """(module, qualname) when the worker can import this very wrapper by name."""
        wrapped = self.__wrapped__
        module = getattr(wrapped, "__module__", None)
        qualname = getattr(wrapped, "__qualname__", "")
        if module and module != "__main__" and "<" not in qualname:
            try:
                if _import_by_name(module, qualname) is self:
                    return module, qualname
            except Exception:  # fall back to by value
                pass
        return None

    def __reduce_ex__(self, protocol: Any) -> Any:
        ref = self._by_reference()
        if ref is not None:
            return _import_by_name, ref
        return _rebuild, (self.__wrapped__, self._self_options)


def _target(owner: SandboxedFunction, wrapped: Any, instance: Any) -> Any:
    """What to send to the worker: something that pickles and runs the plain function there.

    A plain function goes as its SandboxedFunction (by reference when importable, so that
    recursion and module globals resolve there); a bound method as ``getattr(instance, name)``.
    """
    if instance is None:
        if owner.__wrapped__ is not wrapped:
            return wrapped
        if owner._self_byref is None:
            owner._self_byref = owner._by_reference() is not None
        # By reference the worker imports the user's module (and gets the plain
        # function there); by value the plain function travels, without the
        # wrapper and its options, which the worker would never use.
        return owner if owner._self_byref else wrapped
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
    sb = _registry_get(owner._self_options)
    target = _target(owner, wrapped, instance)
    try:
        return sb.call(
            target,
            args,
            kwargs,
            timeout=owner._self_options.timeout,
            stats=owner._self_options.accounting,
        )
    finally:
        _record(owner, _stats.last_call_stats())


async def _call_async(
    owner: SandboxedFunction,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if _context.IN_WORKER:
        return await wrapped(*args, **kwargs)
    sb = _registry_get(owner._self_options)
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
                target,
                args,
                kwargs,
                timeout=owner._self_options.timeout,
                on_start=on_start,
                stats=owner._self_options.accounting,
            )
        finally:
            # Stats are per thread: take them in the thread that made the call.
            stats.append(_stats.last_call_stats())

    import asyncio

    loop = asyncio.get_running_loop()
    __tracebackhide__ = True  # pytest and IPython leave this frame out
    fut = loop.run_in_executor(None, run)
    try:
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            trim(e)
            raise
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
    _stats.record(stats)


def wrap(fn: Callable[..., Any], options: OptionSet) -> Any:
    """Wrap ``fn`` (a function, classmethod or staticmethod) for ``options``."""
    if isinstance(fn, (classmethod, staticmethod)):
        inner = wrap(fn.__func__, options)
        return type(fn)(inner)
    return SandboxedFunction(fn, options)
