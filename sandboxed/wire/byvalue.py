"""Functions by value with the standard library's pickle, and whether one has changed.

A function the worker cannot import by name (defined in ``__main__`` or a notebook
cell, a lambda, a nested function) travels by value: its code object (``marshal``:
the worker runs the caller's own interpreter), its closure cells, defaults and
attributes, and the globals its code names, gathered into a fresh namespace: one per
module a stream meets, shared by that module's functions in the stream (so a helper
and the function calling it see the same globals in the worker). Loading such a
stream needs nothing but :mod:`pickle`, :mod:`marshal` and this module: a worker's
first by-value call does not import dill.

Classes defined in ``__main__`` are not handled here: :class:`ByValue` raises
:class:`NeedsDill` and the caller falls back to dill for the whole stream.

Change detection: every function the pickler reduces is recorded as a
:class:`Snapshot` of the objects it was made of (code, defaults, closure contents,
the global values it names), compared by identity. :func:`unchanged` is true while
none of them was rebound, i.e. while pickling the function again would pickle the
same objects. A global changed *in place* (``CONFIG["x"] = 1``) is not noticed: as
with ``ProcessPoolExecutor``, what a worker received stays as it was.

This module is imported in the sandbox (to load by-value functions): at import
time it loads only modules every interpreter has loaded already; ``dis`` and
``weakref`` are loaded by the caller, when it first pickles a function by value.
"""

from __future__ import annotations

import marshal
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ByValue", "NeedsDill", "Snapshot", "by_value", "unchanged"]


class NeedsDill(Exception):
    """Internal: the stream holds something only dill can pickle (a ``__main__`` class)."""


class _Empty:
    """Stands for the contents of an empty closure cell."""


# -- loading (in the worker) -----------------------------------------------------------------


def _namespace(module: str) -> dict[str, Any]:
    """A by-value function's globals in the worker: starts with its module's name only."""
    import builtins

    return {"__name__": module, "__builtins__": builtins}


def _module(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]


def _cell() -> types.CellType:
    return types.CellType()


def _function(
    code: types.CodeType,
    namespace: dict[str, Any],
    name: str,
    closure: tuple[types.CellType, ...] | None,
) -> types.FunctionType:
    return types.FunctionType(code, namespace, name, None, closure)


def _restore(fn: types.FunctionType, state: tuple[Any, ...]) -> None:
    """Fill in what was left out of the constructor, so that cycles (recursion) work."""
    names, cells, defaults, kwdefaults, attrs, qualname, module, doc, annotations = state
    fn.__globals__.update(names)
    if cells is not None and fn.__closure__ is not None:
        for cell, value in zip(fn.__closure__, cells, strict=True):
            if value is not _Empty:
                cell.cell_contents = value
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    if attrs:
        fn.__dict__.update(attrs)
    fn.__qualname__ = qualname
    fn.__module__ = module
    fn.__doc__ = doc
    if annotations:
        fn.__annotations__ = annotations


# -- pickling (in the caller) ----------------------------------------------------------------


def by_value(obj: object) -> bool:
    """True for a plain function the worker cannot import by name.

    Cheap on purpose (it runs for every function a call pickles): a function of
    another module whose qualified name has no ``<`` is left to pickle by reference
    (and to the dill fallback, should its module not have it under that name).
    """
    return type(obj) is types.FunctionType and (
        obj.__module__ == "__main__" or "<" in obj.__qualname__
    )


_GLOBAL_OPS = frozenset(
    ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME")
)
_names_cache: Any = None  # code object -> its global names (a WeakKeyDictionary)


def global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` (and the code nested in it) reads, writes or deletes."""
    global _names_cache
    if _names_cache is None:
        import weakref

        _names_cache = weakref.WeakKeyDictionary()
    names: tuple[str, ...] | None = _names_cache.get(code)
    if names is None:
        import dis

        found: dict[str, None] = {}
        stack = [code]
        while stack:
            co = stack.pop()
            for ins in dis.get_instructions(co):
                if ins.opname in _GLOBAL_OPS:
                    found[ins.argval] = None
            stack.extend(c for c in co.co_consts if type(c) is types.CodeType)
        names = _names_cache[code] = tuple(found)
    return names


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _Empty


class Snapshot:
    """What one by-value function was pickled from, compared by identity later."""

    __slots__ = ("attrs", "cells", "code", "defaults", "fn", "globals", "kwdefaults", "values")

    def __init__(self, fn: types.FunctionType, values: dict[str, Any]) -> None:
        import weakref

        self.fn = weakref.ref(fn)
        self.code = fn.__code__
        self.defaults = fn.__defaults__
        self.kwdefaults = fn.__kwdefaults__
        closure = fn.__closure__
        self.cells = None if closure is None else tuple(_cell_value(c) for c in closure)
        self.attrs = tuple(fn.__dict__.items())
        self.globals = fn.__globals__
        names = global_names(self.code)
        self.values = tuple((n, values.get(n, _Empty)) for n in names)

    def unchanged(self) -> bool:
        fn = self.fn()
        if (
            fn is None
            or fn.__code__ is not self.code
            or fn.__defaults__ is not self.defaults
            or fn.__kwdefaults__ is not self.kwdefaults
        ):
            return False
        if self.cells is not None:
            closure = fn.__closure__
            if closure is None:
                return False
            for cell, value in zip(closure, self.cells, strict=True):
                if _cell_value(cell) is not value:
                    return False
        attrs = fn.__dict__
        if len(attrs) != len(self.attrs):
            return False
        for name, value in self.attrs:
            if attrs.get(name, _Empty) is not value:
                return False
        g = self.globals
        for name, value in self.values:  # noqa: SIM110 - cheaper than all() on a generator
            if g.get(name, _Empty) is not value:
                return False
        return True


def unchanged(snapshots: tuple[Snapshot, ...]) -> bool:
    """True while no function of a stream, nor anything it was made of, was rebound."""
    return all(s.unchanged() for s in snapshots)


class _Namespace:
    """Caller side: stands for one module's globals in a stream (memoised, so shared)."""

    __slots__ = ("module",)

    def __init__(self, module: str) -> None:
        self.module = module

    def __reduce__(self) -> Any:
        return _namespace, (self.module,)


class ByValue:
    """Mixin for :class:`pickle.Pickler`: by-value functions with the standard library.

    After ``dump``, ``snapshots`` lists every function reduced by value (None if
    none was). ``__main__`` classes raise :class:`NeedsDill`.
    """

    snapshots: list[Snapshot] | None = None
    _namespaces: dict[int, tuple[dict[str, Any], _Namespace]] | None = None

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.FunctionType:
            if obj.__module__ == "__main__" or "<" in obj.__qualname__:
                return self._reduce_function(obj)
            return NotImplemented
        if kind is types.CodeType:
            return marshal.loads, (marshal.dumps(obj),)
        if kind is types.CellType:
            return _cell, ()
        if kind is types.ModuleType:
            name = obj.__name__
            if name == "__main__" or sys.modules.get(name) is not obj:
                raise NeedsDill
            return _module, (name,)
        if isinstance(obj, type) and obj.__module__ == "__main__":
            raise NeedsDill
        return NotImplemented

    def _reduce_function(self, fn: types.FunctionType) -> Any:
        g = fn.__globals__
        namespaces = self._namespaces
        if namespaces is None:
            namespaces = self._namespaces = {}
            self.snapshots = []
        held = namespaces.get(id(g))
        if held is None:
            # Holding the dict keeps its id from being reused while this stream is made.
            module = str(g.get("__name__", fn.__module__))
            held = namespaces[id(g)] = (g, _Namespace(module))
        values = {n: g[n] for n in global_names(fn.__code__) if n in g}
        snapshot = Snapshot(fn, values)
        assert self.snapshots is not None
        self.snapshots.append(snapshot)
        state = (
            values,
            snapshot.cells,
            fn.__defaults__,
            fn.__kwdefaults__,
            dict(snapshot.attrs) or None,
            fn.__qualname__,
            fn.__module__,
            fn.__doc__,
            fn.__annotations__ or None,
        )
        args = (fn.__code__, held[1], fn.__name__, fn.__closure__)
        return _function, args, state, None, None, _restore
