"""``@sandboxed(...)``: turn a function into one that runs in a cached transient unit.

This module is light on purpose: a worker imports every module that defines
sandboxed functions, and there ``@sandboxed`` returns the plain function (a
call inside a sandbox runs directly). The wrapper itself is in
:mod:`sandboxed.api.function` (it needs wrapt), imported on the caller's side only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from sandboxed import _context

if TYPE_CHECKING:
    from sandboxed.directives.options import OptionSet

P = ParamSpec("P")
R = TypeVar("R")


def _wrap(fn: Any, options: OptionSet) -> Any:
    from sandboxed.api.function import wrap

    return wrap(fn, options)


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
    :class:`InvalidDirectiveValueError`, :class:`ConflictingDirectivesError`, and
    :class:`ConfigurationError` for what cannot be sandboxed (a class, a generator
    function, something not callable, a preset constructor without its argument).
    """
    if _context.IN_WORKER:
        # Inside a sandbox a sandboxed function is just the function: it runs directly.
        if len(presets) == 1 and not options and _is_target(presets[0]):
            return presets[0]
        return lambda fn: fn
    from sandboxed.directives.options import OptionSet

    for p in presets:
        _refuse_factory(p)
    first = presets[0] if len(presets) == 1 and not options else None
    if first is not None and (_is_target(first) or isinstance(first, type)):
        _check_target(first)
        return _wrap(first, OptionSet.build())
    built = OptionSet.build(*presets, **options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        _check_target(fn)
        return _wrap(fn, built)  # type: ignore[no-any-return]

    return decorate


def _refuse_factory(obj: Any) -> None:
    if getattr(obj, "__module__", None) != "sandboxed.directives.presets" or isinstance(obj, type):
        return
    from sandboxed.directives.presets import factory_example

    example = factory_example(obj)
    if example is not None:
        from sandboxed._errors import ConfigurationError

        raise ConfigurationError(
            f"{obj.__name__} is a preset constructor and needs its argument: write {example}"
        )


def _check_target(obj: Any) -> None:
    """Raise ConfigurationError for what cannot be a sandboxed function, saying what to write."""
    from sandboxed._errors import ConfigurationError

    fn = obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if isinstance(fn, type):
        raise ConfigurationError(
            f"@sandboxed decorates functions, not classes: {name} would be built in the "
            "sandbox and its instance copied back, unsandboxed; decorate its methods, or a "
            "function that returns plain data"
        )
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise ConfigurationError(
            f"{name} is {kind} function: a generator cannot cross the sandbox boundary "
            "(it runs in the worker, and would be pickled unstarted or not at all); return a "
            "list instead (return list(...)), or submit one call per item to the executor"
        )
    if not callable(fn):
        raise ConfigurationError(
            f"sandboxed(...) decorates a function; got {obj!r} ({type(obj).__name__}); "
            "write @sandboxed(...) above a def, or sandboxed(...)(function)"
        )


def _is_target(obj: Any) -> bool:
    return (
        inspect.isfunction(obj) or isinstance(obj, (classmethod, staticmethod))
    ) and not hasattr(obj, "directives")
