"""Packaging of calls, results and exceptions for the trip across the sandbox boundary.

This is the only module that imports dill (STYLE.md). Everything that crosses the
boundary is a list of *parts*::

    parts = dumps_call(fn, args, kwargs)     # list[bytes | memoryview]
    parts[0]                                 # the main stream
    parts[1:]                                # out-of-band buffers, in order
    fn, args, kwargs = loads_call(parts[0], parts[1:])

The transport writes the parts as they are (``sendmsg``/``writev``; nothing has been
copied into one big buffer) with their lengths, and hands the receiving side the main
stream and the buffers, each as any bytes-like object. A ``bytes`` value is rebuilt
from a buffer received as ``bytes`` without a copy (otherwise it is copied), a
``bytearray`` value from a buffer received as ``bytearray`` (which the value then
owns: do not reuse it), and values supporting pickle protocol 5 out-of-band data
(numpy arrays) use the buffer in place. The main stream may be a ``bytes``,
``bytearray`` or ``memoryview``.

Trusted mode (the default): pickle protocol 5
    The main stream is one kind byte and a pickle stream:

    - ``P``: plain pickle, no persistent ids; loaded with the C unpickler.
    - ``Q``: pickle with persistent ids: an int ``k >= 0`` means ``bytes`` made from
      ``buffers[k]``, ``-1 - k`` a ``bytearray`` made from it. ``bytes`` and ``bytearray``
      values of at least ``OUT_OF_BAND_THRESHOLD`` travel this way so that they are
      never copied into the stream. The other buffers are protocol-5 ``PickleBuffer``
      data (``NEXT_BUFFER``: numpy arrays...), in stream order.
    - ``D``: the same, produced by dill and loaded with dill's unpickler.

    Pickling tries the C pickler first (it is ~10x faster than dill and handles every
    function importable by reference); dill takes over when that fails or when
    something from ``__main__`` must travel by value (the worker has the caller's
    ``sys.path`` but not its ``__main__``). Dill runs with ``recurse=True`` so that a
    by-value function carries the globals it uses rather than expecting them in the
    worker's ``__main__``. Unpickling is code execution: only do it with data from a
    trusted peer.

Safe mode (``safe=True``, for results of untrusted code)
    Results and exceptions travel in the plain-data codec of :mod:`sandboxed.wire.codec`
    (``parts[0]`` is the codec stream, large bytes follow as buffers). Decoding runs no
    code from the sandbox. The mode is chosen by the receiver's own configuration,
    never by anything in the data: a safe receiver never unpickles.

Exceptions
    The envelope is always a codec stream of ``(type_name, message, traceback_text,
    pickled)``, ``pickled`` being a trusted-mode main stream (without out-of-band
    buffers) of the exception itself, or None. The sender only includes it when the
    exception is an ``Exception`` and survives a pickle round trip on its side. The
    receiver returns the exception itself with ``__cause__`` set to
    :class:`RemoteTraceback` (as concurrent.futures does), or, when it cannot be
    rebuilt (or in safe mode), a :class:`RemoteError` with the type name, message and
    traceback text, its ``__cause__`` also the :class:`RemoteTraceback`.

    ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit`` and every other
    ``BaseException`` that is not an ``Exception`` never come back as themselves: raised
    in the caller they would stop it. They come back as ``RemoteError`` whose
    ``type_name`` is their type name (``"SystemExit"``) and whose ``message`` is
    ``str(exc)`` -- for ``SystemExit`` that is its code (``"3"``; ``""`` for
    ``sys.exit()``).
"""

from __future__ import annotations

import io
import pickle

from sandboxed._errors import (
    RemoteError,
    RemoteTraceback,
    SerializationError,
    UnsafeResultError,
)
from sandboxed.wire import byvalue, codec

# Workers import this module before their first call: typing and traceback (~10 ms)
# are left out of that path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, NoReturn, TypeAlias

__all__ = [
    "OUT_OF_BAND_THRESHOLD",
    "Buffer",
    "ByValueFunction",
    "by_value_function",
    "dumps_call",
    "dumps_exception",
    "dumps_result",
    "loads_call",
    "loads_exception",
    "loads_function",
    "loads_result",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

PROTOCOL = 5
OUT_OF_BAND_THRESHOLD = 64 * 1024
"""bytes values at least this large travel as out-of-band buffers, never copied."""

_PLAIN = b"P"
_PERSISTENT = b"Q"
_DILL = b"D"

# The C pickler hands a bytes payload this large to file.write() as the object itself
# (CPython's FRAME_SIZE_TARGET), which is how the first pass notices large bytes cheaply.
_FRAME_SIZE_TARGET = 64 * 1024


# -- values bound to this process ------------------------------------------------------------


class ProcessBound(Exception):
    """Internal: a value that only means something in the process that holds it."""


_BY_NAME = {
    ("_thread", "lock"): "lock",
    ("_thread", "RLock"): "lock",
    ("_socket", "socket"): "socket",
    ("mmap", "mmap"): "mmap",
    ("_multiprocessing", "SemLock"): "semlock",
    ("select", "epoll"): "selector",
    ("select", "poll"): "selector",
}
_ADVICE = {
    "file": (
        "an open file",
        "a file object belongs to this process: the sandbox would get a new file opened by "
        "name (mode 'w' truncates it, 'r+' writes from offset 0), not this one; pass its "
        "path and open it in the function, or pass its contents (f.read())",
    ),
    "lock": (
        "a lock",
        "a lock only orders the threads of this process: the sandbox would get a new, "
        "unrelated one; leave it out and order the work with the call's result or futures",
    ),
    "socket": (
        "a socket",
        "a socket belongs to this process; pass the address to connect to, or the data",
    ),
    "mmap": ("a memory map", "pass the mapped file's path, or the bytes"),
    "semlock": (
        "a multiprocessing lock or semaphore",
        "it only orders processes of this program; leave it out",
    ),
    "selector": ("a selector (epoll/poll)", "it belongs to this process; leave it out"),
}
_MISSING = object()
_bound_kinds: dict[type, str | None] = {}


def _bound_kind(kind: type) -> str | None:
    found = _bound_kinds.get(kind, _MISSING)
    if found is _MISSING:
        found = None
        if issubclass(kind, io.IOBase) and not issubclass(kind, (io.BytesIO, io.StringIO)):
            found = "file"
        else:
            for base in kind.__mro__:
                found = _BY_NAME.get((base.__module__, base.__qualname__))
                if found:
                    break
        _bound_kinds[kind] = found
    return found  # type: ignore[return-value]


def _refuse_bound(obj: object) -> None:
    kind = _bound_kind(type(obj))
    if kind is not None:
        what, advice = _ADVICE[kind]
        shown = _safe_repr(obj)
        raise ProcessBound(f"it holds {what} ({shown}): {advice}")


def _safe_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= 100 else text[:97] + "..."


# -- pickling --------------------------------------------------------------------------------


class _Sink:
    """A write-only file that keeps what the pickler writes, noticing large bytes payloads."""

    __slots__ = ("chunks", "large")

    def __init__(self, kind: bytes) -> None:
        self.chunks: list[bytes] = [kind]
        self.large = False

    def write(self, data: bytes) -> int:
        chunks = self.chunks
        # A large bytes (bytearray) value arrives as its own write, right after the chunk
        # that ends with its BINBYTES/BINBYTES8 (BYTEARRAY8) header.
        size = len(data)
        if size >= _FRAME_SIZE_TARGET and type(data) in (bytes, bytearray):
            last = chunks[-1]
            long_size = size.to_bytes(8, "little")
            if (
                last.endswith(b"B" + size.to_bytes(4, "little"))
                or last.endswith(b"\x8e" + long_size)
                or last.endswith(b"\x96" + long_size)
            ):
                self.large = True
        chunks.append(data)
        return size

    def stream(self) -> bytes:
        return b"".join(self.chunks)


class _Persistent:
    """Mixin: large bytes and bytearray values become persistent ids (buffer indices)."""

    parts: list[Buffer]
    _seen: dict[int, int]

    def persistent_id(self, obj: Any) -> int | None:
        kind = type(obj)
        if (kind is bytes or kind is bytearray) and len(obj) >= OUT_OF_BAND_THRESHOLD:
            index = self._seen.get(id(obj))
            if index is None:
                index = self._seen[id(obj)] = len(self.parts) - 1
                self.parts.append(obj)
            return index if kind is bytes else -1 - index
        return None

    def buffer_callback(self, buf: pickle.PickleBuffer) -> bool:
        return _out_of_band(self.parts, buf)


def _out_of_band(parts: list[Buffer], buf: pickle.PickleBuffer) -> bool:
    """A pickler's buffer_callback: collect contiguous buffers, keep the others in-band."""
    try:
        parts.append(buf.raw())
    except BufferError:
        return True
    return False


class _Bound:
    """Mixin: refuse values bound to this process (files, locks...) before anything is sent."""

    def reducer_override(self, obj: Any) -> Any:
        _refuse_bound(obj)
        return super().reducer_override(obj)  # type: ignore[misc]


class _FastPickler(_Bound, byvalue.ByValue, pickle.Pickler):
    pass


class _FastPersistentPickler(_Persistent, _Bound, byvalue.ByValue, pickle.Pickler):
    def __init__(self, file: io.BytesIO, parts: list[Buffer]) -> None:
        self.parts = parts
        self._seen = {}
        super().__init__(file, PROTOCOL, buffer_callback=self.buffer_callback)


# dill is imported only when something needs it (~50 ms, and most calls never do): a
# worker that only ever sees C-pickle streams starts without it.
_dill_classes: tuple[type[Any], type[Any], type[Any]] | None = None


def _dill() -> tuple[type[Any], type[Any], type[Any]]:
    """(dill.Pickler, our pickler, our unpickler), importing dill on first use."""
    global _dill_classes
    if _dill_classes is None:
        import dill

        class _DillPickler(_Persistent, dill.Pickler):  # type: ignore[misc]
            def __init__(self, file: io.BytesIO, parts: list[Buffer]) -> None:
                self.parts = parts
                self._seen = {}
                super().__init__(
                    file, PROTOCOL, buffer_callback=self.buffer_callback, recurse=True, byref=False
                )

            def save(self, obj: Any, save_persistent_id: bool = True) -> None:
                # dill pickles open files by name and locks as new locks: refuse them.
                _refuse_bound(obj)
                super().save(obj, save_persistent_id)

        class _DillUnpickler(_Loader, dill.Unpickler):  # type: ignore[misc]
            def __init__(self, file: io.BytesIO, buffers: Sequence[Buffer]) -> None:
                super().__init__(file, buffers=self._setup(buffers))

        class _DillInline(dill.Pickler):  # type: ignore[misc]
            def save(self, obj: Any, save_persistent_id: bool = True) -> None:
                _refuse_bound(obj)
                super().save(obj, save_persistent_id)

        _dill_classes = (_DillInline, _DillPickler, _DillUnpickler)
    return _dill_classes


def _pickle_fast(obj: object) -> list[Buffer]:
    parts: list[Buffer] = [b""]
    sink = _Sink(_PLAIN)
    pickler = _FastPickler(sink, PROTOCOL, buffer_callback=lambda b: _out_of_band(parts, b))
    pickler.dump(obj)
    if not sink.large:
        parts[0] = sink.stream()
        return parts
    # Large bytes are in the stream, not yet copied: pickle again, sending them out-of-band.
    parts = [b""]
    file = io.BytesIO()
    file.write(_PERSISTENT)
    _FastPersistentPickler(file, parts).dump(obj)
    parts[0] = file.getvalue()
    return parts


def _pickle_dill(obj: object) -> list[Buffer]:
    parts: list[Buffer] = [b""]
    file = io.BytesIO()
    file.write(_DILL)
    _dill()[1](file, parts).dump(obj)
    parts[0] = file.getvalue()
    return parts


def _pickle(obj: object) -> list[Buffer]:
    """Pickle with the C pickler, or with dill when that fails; raise what dill raised."""
    try:
        return _pickle_fast(obj)
    except ProcessBound:
        raise
    except Exception:
        pass
    return _pickle_dill(obj)


def _describe(exc: BaseException) -> str:
    text = _safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- unpickling ------------------------------------------------------------------------------


class _Loader:
    """Mixin: resolve persistent ids to buffers; hand the rest out as NEXT_BUFFER data."""

    def _setup(self, buffers: Sequence[Buffer]) -> Iterator[Buffer]:
        self._buffers = buffers
        self._claimed: dict[int, bytes | bytearray] = {}
        return self._next_buffers()

    def _next_buffers(self) -> Iterator[Buffer]:
        # NEXT_BUFFER takes the next buffer not claimed by a persistent id: the stream
        # refers to buffers in the order they were appended, so every persistent id
        # before this opcode has already been loaded.
        for index, buf in enumerate(self._buffers):
            if index not in self._claimed:
                yield buf

    def persistent_load(self, pid: Any) -> bytes | bytearray:
        index = pid if type(pid) is int and pid >= 0 else -1 - pid
        if type(pid) is not int or not 0 <= index < len(self._buffers):
            raise pickle.UnpicklingError(f"invalid out-of-band buffer reference {pid!r}")
        loaded = self._claimed.get(index)
        if loaded is None:
            buf = self._buffers[index]
            kind = bytes if pid >= 0 else bytearray
            loaded = self._claimed[index] = buf if type(buf) is kind else kind(buf)
        return loaded


class _PersistentUnpickler(_Loader, pickle.Unpickler):
    def __init__(self, file: io.BytesIO, buffers: Sequence[Buffer]) -> None:
        super().__init__(file, buffers=self._setup(buffers))


def _unpickle(main: Buffer, buffers: Sequence[Buffer]) -> Any:
    view = memoryview(main).cast("B")
    if not view:
        raise pickle.UnpicklingError("empty stream")
    kind = bytes(view[:1])
    if kind == _PLAIN:
        return pickle.loads(view[1:], buffers=buffers)
    if kind == _PERSISTENT:
        return _PersistentUnpickler(io.BytesIO(view[1:]), buffers).load()
    if kind == _DILL:
        return _dill()[2](io.BytesIO(view[1:]), buffers).load()
    raise pickle.UnpicklingError(f"unknown stream kind {kind!r}")


# -- calls -----------------------------------------------------------------------------------


def dumps_call(
    fn: Callable[..., object],
    args: Sequence[object],
    kwargs: dict[str, object],
    *,
    by_value: ByValueFunction | None = None,
) -> list[Buffer]:
    """Package a call ``fn(*args, **kwargs)`` for the worker: ``[main, *buffers]``.

    Functions importable by reference travel by reference; ``__main__`` code,
    lambdas, closures and nested functions travel by value (the standard library's
    pickle, see :mod:`sandboxed.wire.byvalue`; dill when they use a ``__main__`` class).
    With ``by_value`` (what :func:`by_value_function` made of ``fn``) the function
    travels apart: the stream holds None in its place, for :func:`loads_call` to fill in.

    Raises :class:`SerializationError` whose ``which`` names the first part that
    cannot be pickled: ``"function"``, ``"argument 0"``, ``"argument 'name'"`` (or
    ``"call"`` when only the combination fails).
    """
    call = (None if by_value is not None else fn, tuple(args), dict(kwargs))
    try:
        return _pickle(call)
    except Exception as exc:
        whole = exc
    parts: list[tuple[str, object]] = [] if by_value is not None else [("function", fn)]
    parts += [(f"argument {i}", arg) for i, arg in enumerate(args)]
    parts += [(f"argument {name!r}", value) for name, value in kwargs.items()]
    for which, part in parts:
        try:
            _pickle(part)
        except ProcessBound as exc:
            reason = _bound_reason(fn, exc) if which == "function" else str(exc)
            raise SerializationError(which, reason) from None
        except Exception as exc:
            raise SerializationError(which, _describe(exc)) from exc
    raise SerializationError("call", _describe(whole)) from whole


def _bound_reason(fn: object, exc: ProcessBound) -> str:
    """Why ``fn`` cannot travel, naming the global or variable that holds the bound value."""
    reason = str(exc)
    name = _bound_global(fn)
    return f"it uses {name}, which {reason[3:]}" if name else reason


def _bound_global(fn: object) -> str | None:
    """The global or closure variable of ``fn`` that holds a process-bound value, if one does."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    found: list[tuple[str, object]] = []
    cells = getattr(fn, "__closure__", None) or ()
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            found.append((f"the variable {name!r}", cell.cell_contents))
        except ValueError:
            continue
    namespace = getattr(fn, "__globals__", {})
    names = byvalue.global_names(code)
    found += [(f"the global {n!r}", namespace[n]) for n in names if n in namespace]
    for label, value in found:
        try:
            _pickle_fast_or_dill_check(value)
        except ProcessBound:
            return label
        except Exception:
            continue
    return None


def _pickle_fast_or_dill_check(value: object) -> None:
    import types  # only on this error path: the worker's start-up does without it

    if isinstance(value, types.ModuleType | types.FunctionType | type):
        return
    _pickle(value)


def loads_call(
    main: Buffer, buffers: Sequence[Buffer] = (), fn: Callable[..., object] | None = None
) -> tuple[Callable[..., object], tuple[object, ...], dict[str, object]]:
    """Unpack what :func:`dumps_call` made into ``(fn, args, kwargs)`` (runs pickled code).

    ``fn`` is the function of a call whose function travelled apart (``by_value``).

    Raises :class:`SerializationError` (``which="call"``) when it cannot be rebuilt.
    """
    try:
        call = _unpickle(main, buffers)
    except Exception as exc:
        raise SerializationError("call", f"cannot be rebuilt: {_describe(exc)}") from exc
    if (
        type(call) is not tuple
        or len(call) != 3
        or not (call[0] is None if fn is not None else callable(call[0]))
        or type(call[1]) is not tuple
        or type(call[2]) is not dict
    ):
        raise SerializationError("call", "the stream does not hold (fn, args, kwargs)")
    return call[0] if fn is None else fn, call[1], call[2]


# -- by-value functions, shipped once per worker ------------------------------------------


class ByValueFunction:
    """A function that travels by value: its stream and the SHA-256 digest of that stream.

    The digest names the function in a worker's cache: equal digests mean byte-identical
    streams (code, globals, closure and all), so one call's function can never be taken
    for another's. ``snapshots`` is what :func:`by_value_function` checks to tell whether
    the function changed since (None when dill made the stream: then it is pickled anew
    each call, and only the digest saves shipping it).
    """

    __slots__ = ("digest", "snapshots", "stream")

    def __init__(self, stream: bytes, snapshots: tuple[byvalue.Snapshot, ...] | None) -> None:
        import hashlib

        self.stream = stream
        self.digest = hashlib.sha256(stream).digest()
        self.snapshots = snapshots


_by_value_memo: Any = None
_MEMO_MAX_STREAM = 64 << 20
"""Streams up to this size are kept while their function lives; larger ones are re-made."""


def by_value_function(fn: object) -> ByValueFunction | None:
    """``fn`` as a stream of its own when it travels by value; None when it does not.

    Plain functions the worker cannot import by name (``__main__``, notebook cells,
    lambdas, nested functions) qualify. The stream is made once and kept while the
    function and everything it was made of stay as they are (see
    :mod:`sandboxed.wire.byvalue`): a rebound global, new code, defaults or closure
    contents make a new one.

    Raises :class:`SerializationError` (``which="function"``) when it cannot be pickled.
    """
    if not byvalue.by_value(fn):
        return None
    global _by_value_memo
    memo = _by_value_memo
    if memo is None:
        import weakref

        memo = _by_value_memo = weakref.WeakKeyDictionary()
    known = memo.get(fn)
    if known is not None and byvalue.unchanged(known.snapshots):
        return known  # type: ignore[no-any-return]
    try:
        try:
            file = io.BytesIO()
            file.write(_PLAIN)
            pickler = _FastPickler(file, PROTOCOL)
            pickler.dump(fn)
            shipped = ByValueFunction(file.getvalue(), tuple(pickler.snapshots or ()))
        except ProcessBound:
            raise
        except Exception:
            shipped = ByValueFunction(_pickle_inline(fn), None)
    except ProcessBound as exc:
        raise SerializationError("function", _bound_reason(fn, exc)) from None
    except Exception as exc:
        raise SerializationError("function", _describe(exc)) from exc
    if shipped.snapshots is not None and len(shipped.stream) <= _MEMO_MAX_STREAM:
        memo[fn] = shipped
    return shipped


def loads_function(stream: Buffer) -> Callable[..., object]:
    """Rebuild what :func:`by_value_function` made (runs pickled code).

    Raises :class:`SerializationError` (``which="function"``) when it cannot be rebuilt.
    """
    try:
        fn = _unpickle(stream, ())
    except Exception as exc:
        raise SerializationError("function", f"cannot be rebuilt: {_describe(exc)}") from exc
    if not callable(fn):
        raise SerializationError("function", "the stream does not hold a function")
    return fn  # type: ignore[no-any-return]


# -- results ---------------------------------------------------------------------------------


def dumps_result(value: object, *, safe: bool = False) -> list[Buffer]:
    """Package a function's return value: ``[main, *buffers]``.

    With ``safe=True`` the value is encoded as plain data (see :mod:`sandboxed.wire.codec`).

    Raises :class:`SerializationError` (``which="result"``) when it cannot be pickled,
    and, with ``safe=True``, :class:`UnsafeResultError` when it is not plain data.
    """
    if safe:
        return codec.encode_parts(value, root="result")
    try:
        return _pickle(value)
    except ProcessBound as exc:
        raise SerializationError("result", str(exc)) from None
    except Exception as exc:
        raise SerializationError("result", _describe(exc)) from exc


def loads_result(
    main: Buffer,
    buffers: Sequence[Buffer] = (),
    *,
    safe: bool = False,
    max_size: int | None = None,
) -> object:
    """Unpack what :func:`dumps_result` made with the same ``safe``.

    With ``safe=True`` no code runs, whatever the data holds, and the decoded value
    takes at most its budget in memory (``max_size``: see :func:`sandboxed.wire.codec.budget`).

    Raises :class:`SerializationError` (``which="result"``) when it cannot be
    unpickled, and, with ``safe=True``, :class:`UnsafeResultError` when it is not a
    well-formed plain-data stream.
    """
    if safe:
        return codec.decode(main, buffers, max_size=max_size)
    try:
        return _unpickle(main, buffers)
    except Exception as exc:
        raise SerializationError("result", f"cannot be rebuilt: {_describe(exc)}") from exc


# -- exceptions ------------------------------------------------------------------------------


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins", "__main__") else f"{module}.{name}"


def _format(exc: BaseException) -> str:
    import traceback

    try:
        return "".join(traceback.format_exception(exc))
    except Exception:
        return (
            f"{_type_name(type(exc))}: {_safe_str(exc)}\n(the traceback could not be formatted)\n"
        )


def _pickled_exception(exc: BaseException) -> bytes | None:
    """The exception as a trusted-mode stream, if it is an Exception that survives a round trip."""
    if not isinstance(exc, Exception):
        return None
    try:
        # In-band only: the envelope carries one stream.
        stream = _pickle_inline(exc)
        rebuilt = _unpickle(stream, ())
    except Exception:
        return None
    # A class that travelled by value is rebuilt as a new class object: compare names.
    same = type(rebuilt).__qualname__ == type(exc).__qualname__
    return stream if same and isinstance(rebuilt, Exception) else None


def _pickle_inline(obj: object) -> bytes:
    def refuse_out_of_band(buf: pickle.PickleBuffer) -> bool:
        return True

    try:
        file = io.BytesIO()
        file.write(_PLAIN)
        _FastPickler(file, PROTOCOL, buffer_callback=refuse_out_of_band).dump(obj)
        return file.getvalue()
    except Exception:
        pass
    file = io.BytesIO()
    file.write(_DILL)
    _dill()[0](file, PROTOCOL, buffer_callback=refuse_out_of_band, recurse=True, byref=False).dump(
        obj
    )
    return file.getvalue()


def dumps_exception(exc: BaseException, *, safe: bool = False) -> list[Buffer]:
    """Package an exception raised by the function: ``[main, *buffers]``. Never raises.

    Carries its type name, ``str()`` and formatted traceback, and, unless ``safe``,
    the exception itself when it is an ``Exception`` that pickles and unpickles.
    """
    pickled = None if safe else _pickled_exception(exc)
    envelope = (_type_name(type(exc)), _safe_str(exc), _format(exc), pickled)
    return codec.encode_parts(envelope, root="exception")


def _bad_envelope(why: str) -> NoReturn:
    raise RemoteError("<unknown>", f"the worker sent a malformed exception: {why}")


def loads_exception(
    main: Buffer,
    buffers: Sequence[Buffer] = (),
    *,
    safe: bool = False,
    max_size: int | None = None,
) -> BaseException:
    """Rebuild what :func:`dumps_exception` made, as an exception for the caller to raise.

    Returns the user's exception with ``__cause__`` set to :class:`RemoteTraceback`,
    or a :class:`RemoteError` (also with that cause) when it cannot be rebuilt, is not
    an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``...), or ``safe`` is true
    (then nothing is unpickled). An ``UnsafeResultError`` raised in the worker (a result
    that is not plain data, in safe mode) comes back as :class:`UnsafeResultError` in
    both modes. Raises :class:`RemoteError` only when the envelope itself is malformed.
    """
    try:
        envelope = codec.decode(main, buffers, max_size=max_size)
    except UnsafeResultError as exc:
        _bad_envelope(str(exc))
    if type(envelope) is not tuple or len(envelope) != 4:
        _bad_envelope("not a 4-tuple")
    type_name, message, tb_text, pickled = envelope
    if type(type_name) is not str or type(message) is not str or type(tb_text) is not str:
        _bad_envelope("type name, message and traceback must be str")
    if pickled is not None and type(pickled) is not bytes:
        _bad_envelope("the pickled exception must be bytes or None")
    cause = RemoteTraceback(tb_text)
    if pickled is not None and not safe:
        try:
            rebuilt = _unpickle(pickled, ())
        except Exception:
            rebuilt = None
        if isinstance(rebuilt, Exception):
            rebuilt.__cause__ = cause
            return rebuilt
    error: Exception
    if type_name == _UNSAFE_RESULT:
        # The worker could not encode the result as plain data: the error safe mode
        # promises. Rebuilding our own class from a str runs nothing from the sandbox.
        error = UnsafeResultError(message)
    else:
        error = RemoteError(type_name, message, tb_text)
    error.__cause__ = cause
    return error


_UNSAFE_RESULT = _type_name(UnsafeResultError)
