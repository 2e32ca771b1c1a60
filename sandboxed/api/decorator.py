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
    :class:`InvalidDirectiveValueError`, :class:`ConflictingDirectivesError`.
    """
    if _context.IN_WORKER:
        # Inside a sandbox a sandboxed function is just the function: it runs directly.
        if len(presets) == 1 and not options and _is_target(presets[0]):
            return presets[0]
        return lambda fn: fn
    from sandboxed.directives.options import OptionSet

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
