"""The safe plain-data codec: results from untrusted code, decoded without running any of it.

In safe result mode the worker encodes what the function returned with :func:`encode`
(or :func:`encode_parts`) and the caller decodes it with :func:`decode`. Decoding only
ever builds values of the types listed below; it never imports, looks up or calls
anything named by the data, so a hostile worker can at worst send a wrong *value*,
never make the caller run code. There are no classes or objects: anything else is
refused by the encoder with :class:`UnsafeResultError` naming the type and where it
sits (``result[2]['x']``).

Wire format (version 1)
-----------------------
::

    stream   := b"SBC" 0x01 value            # magic, version, exactly one value, nothing after
    value    := tag payload                  # tag is one ASCII byte
    uvarint  := unsigned LEB128, at most 10 bytes (< 2**64)

    tag  type                 payload
    N    None                 -
    T    True                 -
    F    False                -
    i    int                  uvarint n, then n bytes: little-endian two's complement (0 is n=0)
    f    float                8 bytes, IEEE 754 binary64, little-endian
    c    complex              16 bytes: real, imag as for float
    s    str                  uvarint n, then n bytes of UTF-8 (with surrogatepass)
    b    bytes                uvarint n, then n bytes
    B    bytes, out-of-band   uvarint k: the bytes are buffers[k] (see encode_parts)
    l    list                 uvarint n, then n values
    t    tuple                uvarint n, then n values
    d    dict                 uvarint n, then n (key value) pairs
    S    set                  uvarint n, then n values
    Z    frozenset            uvarint n, then n values
    M    decimal.Decimal      uvarint n, then n bytes of ASCII: str(value)
    R    datetime.timedelta   "<iII": days, seconds, microseconds
    D    datetime.date        "<HBB": year, month, day
    H    datetime.time        "<BBBIB": hour, minute, second, microsecond, fold; then tz
    W    datetime.datetime    "<HBBBBBIB": year ... microsecond, fold; then tz
    tz   := N | z "<q" offset-in-microseconds, then a value: None or the zone's name (str)

Only exact types are accepted (``type(x) is list``...; bool is its own tag): a subclass
(a namedtuple, an ``IntEnum``, an ``OrderedDict``) is refused rather than silently
flattened, and so is a ``tzinfo`` other than ``datetime.timezone``. ``bytearray`` and
``memoryview`` are encoded as bytes (they come back as ``bytes``). Shared references are
not preserved (a list appearing twice is encoded twice) and reference cycles are refused.

Robustness of :func:`decode` against hostile input: nesting is limited to
``MAX_DEPTH`` containers; every length and count is checked against what is left
of the buffer before anything is allocated; trailing bytes, unknown tags, bad
UTF-8, invalid dates, unhashable or duplicate dict keys and set elements are
errors; a dict or set whose keys share one hash value more than
``MAX_HASH_COLLISIONS`` times is refused (hash flooding would make building it
quadratic); out-of-band buffers must each be used exactly once; and the decoded value
may take at most ``AMPLIFICATION`` times the bytes received (plus ``BUDGET_SLACK``) in
memory, or less when the caller sets ``max_size`` (the ``max_decoded`` option): a
stream of tiny containers (an empty set is 2 bytes here, 216 in memory) is refused as
it is read, before it is built. Every failure is an :class:`UnsafeResultError` saying
what was wrong and at which offset.
"""

from __future__ import annotations

import struct
from sys import getsizeof as _sizeof

from sandboxed._errors import UnsafeResultError

# The sandbox's supervisor imports this module before anything else runs in the unit:
# typing, datetime and decimal (~10 ms together) are imported only when needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as _dt
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn, TypeAlias

__all__ = [
    "AMPLIFICATION",
    "BUDGET_SLACK",
    "MAX_DEPTH",
    "MAX_HASH_COLLISIONS",
    "OUT_OF_BAND_THRESHOLD",
    "Buffer",
    "budget",
    "decode",
    "encode",
    "encode_parts",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

MAGIC = b"SBC\x01"
MAX_DEPTH = 256
"""Containers nested deeper than this are refused, when encoding and when decoding."""
MAX_HASH_COLLISIONS = 64
"""Keys of one dict (elements of one set) that may share a hash value."""
OUT_OF_BAND_THRESHOLD = 64 * 1024
AMPLIFICATION = 64
"""A decoded value may take this many times the bytes received in memory (plus the slack)."""
BUDGET_SLACK = 64 * 1024
"""Bytes of memory any decoded value may take, whatever its size on the wire."""

"""bytes values at least this large go out-of-band in :func:`encode_parts`."""

_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_TIMEDELTA = struct.Struct("<iII")
_DATE = struct.Struct("<HBB")
_TIME = struct.Struct("<BBBIB")
_DATETIME = struct.Struct("<HBBBBBIB")
_OFFSET = struct.Struct("<q")


# -- encoding --------------------------------------------------------------------------------


class _Refused(Exception):
    """Internal: carries the offending type outwards, collecting the path on the way."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.steps: list[str] = []


def _uvarint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _step(key: object) -> str:
    # repr() only of exact plain types: it is our code, not the value's, that runs.
    if type(key) in (str, int, float, bool, bytes) or key is None:
        return f"[{key!r}]"
    return f"[<key of type {type(key).__name__}>]"


class _Encoder:
    def __init__(self, oob_threshold: int | None) -> None:
        self.out: list[Buffer] = []
        self.buffers: list[Buffer] = []
        self.oob_threshold = oob_threshold

    def tz(self, tz: _dt.tzinfo | None) -> None:
        import datetime as _dt

        out = self.out
        if tz is None:
            out.append(b"N")
            return
        if type(tz) is not _dt.timezone:
            raise _Refused(f"a datetime with tzinfo of type {type(tz).__qualname__}")
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default = _dt.timezone(offset).tzname(None)
        out.append(b"z" + _OFFSET.pack(offset // _dt.timedelta(microseconds=1)))
        self.value(None if name == default else name, 0)

    def value(self, obj: object, depth: int) -> None:
        out = self.out
        t = type(obj)
        if obj is None:
            out.append(b"N")
        elif obj is True:
            out.append(b"T")
        elif obj is False:
            out.append(b"F")
        elif t is int:
            assert isinstance(obj, int)
            n = (obj.bit_length() + 8) // 8 if obj else 0
            out.append(b"i" + _uvarint(n) + obj.to_bytes(n, "little", signed=True))
        elif t is float:
            assert isinstance(obj, float)
            out.append(b"f" + _F64.pack(obj))
        elif t is str:
            assert isinstance(obj, str)
            raw = obj.encode("utf-8", "surrogatepass")
            out.append(b"s" + _uvarint(len(raw)))
            out.append(raw)
        elif t is bytes or t is bytearray or t is memoryview:
            assert isinstance(obj, bytes | bytearray | memoryview)
            view: Buffer = obj
            if t is memoryview:
                assert isinstance(obj, memoryview)
                if not obj.c_contiguous:
                    raise _Refused("a non-contiguous memoryview")
                view = obj.cast("B")
            size = len(view)
            if self.oob_threshold is not None and size >= self.oob_threshold:
                out.append(b"B" + _uvarint(len(self.buffers)))
                self.buffers.append(view)
            else:
                out.append(b"b" + _uvarint(size))
                out.append(view)
        elif t is list or t is tuple or t is set or t is frozenset or t is dict:
            if depth >= MAX_DEPTH:
                raise _Refused(f"values nested deeper than {MAX_DEPTH} levels (or a cycle)")
            self.container(obj, depth + 1)
        elif t is complex:
            assert isinstance(obj, complex)
            out.append(b"c" + _C128.pack(obj.real, obj.imag))
        else:
            self.other(obj, t)

    def other(self, obj: object, t: type) -> None:
        """The rarer types, whose modules are imported only when such a value shows up."""
        import datetime as _dt
        import decimal

        out = self.out
        if t is decimal.Decimal:
            out.append(b"M" + self._sized(str(obj).encode("ascii")))
        elif t is _dt.datetime:
            assert isinstance(obj, _dt.datetime)
            out.append(
                b"W"
                + _DATETIME.pack(
                    obj.year,
                    obj.month,
                    obj.day,
                    obj.hour,
                    obj.minute,
                    obj.second,
                    obj.microsecond,
                    obj.fold,
                )
            )
            self.tz(obj.tzinfo)
        elif t is _dt.date:
            assert isinstance(obj, _dt.date)
            out.append(b"D" + _DATE.pack(obj.year, obj.month, obj.day))
        elif t is _dt.time:
            assert isinstance(obj, _dt.time)
            out.append(
                b"H" + _TIME.pack(obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold)
            )
            self.tz(obj.tzinfo)
        elif t is _dt.timedelta:
            assert isinstance(obj, _dt.timedelta)
            out.append(b"R" + _TIMEDELTA.pack(obj.days, obj.seconds, obj.microseconds))
        else:
            raise _Refused(f"an object of type {_type_name(t)}")

    @staticmethod
    def _sized(raw: bytes) -> bytes:
        return _uvarint(len(raw)) + raw

    def container(self, obj: Any, depth: int) -> None:
        t = type(obj)
        items: Any
        if t is dict:
            self.out.append(b"d" + _uvarint(len(obj)))
            for i, (key, item) in enumerate(dict.items(obj)):
                try:
                    self.value(key, depth)
                except _Refused as exc:
                    exc.steps.append(f" (key #{i})")
                    raise
                try:
                    self.value(item, depth)
                except _Refused as exc:
                    exc.steps.append(_step(key))
                    raise
            return
        if t is list:
            tag, items = b"l", obj
        elif t is tuple:
            tag, items = b"t", obj
        elif t is set:
            tag, items = b"S", obj
        else:
            tag, items = b"Z", obj
        self.out.append(tag + _uvarint(len(items)))
        for i, item in enumerate(items):
            try:
                self.value(item, depth)
            except _Refused as exc:
                exc.steps.append(f"[{i}]" if tag in (b"l", b"t") else f" (element #{i})")
                raise


def _type_name(t: type) -> str:
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", t.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


def encode_parts(
    obj: object, *, root: str = "result", oob_threshold: int | None = OUT_OF_BAND_THRESHOLD
) -> list[Buffer]:
    """Encode plain data as ``[stream, *out_of_band_buffers]`` without copying large bytes.

    ``bytes`` (``bytearray``, ``memoryview``) values of at least ``oob_threshold``
    bytes are not copied into the stream: the stream refers to them by index (tag
    ``B``) and they follow it, in order, as separate parts. ``oob_threshold=None``
    keeps everything in the stream. Pass the parts after the first as ``buffers`` to
    :func:`decode`.

    Raises :class:`UnsafeResultError` for anything that is not plain data (see the
    module docstring), naming its type and its path from ``root``.
    """
    enc = _Encoder(oob_threshold)
    enc.out.append(MAGIC)
    try:
        enc.value(obj, 0)
    except _Refused as exc:
        path = root + "".join(reversed(exc.steps))
        raise UnsafeResultError(
            f"{path} is {exc.what}; only plain data (None, bool, int, float, complex, str, "
            "bytes, list, tuple, dict, set, frozenset, Decimal, date, time, datetime, "
            "timedelta) can be returned in safe mode: convert it first"
        ) from None
    except RecursionError:
        raise UnsafeResultError(f"{root} is nested too deeply to encode") from None
    return [b"".join(enc.out), *enc.buffers]


def encode(obj: object, *, root: str = "result") -> bytes:
    """Encode plain data into one ``bytes`` stream (see the module docstring).

    Raises :class:`UnsafeResultError` for anything that is not plain data, naming
    its type and its path from ``root`` (``result[2]['x']``).
    """
    stream = encode_parts(obj, root=root, oob_threshold=None)[0]
    assert type(stream) is bytes
    return stream


# -- decoding --------------------------------------------------------------------------------
#
# The decoder is iterative: containers being filled live on an explicit stack, so hostile
# nesting costs neither interpreter recursion nor C stack, and MAX_DEPTH is exact.


class _Decoder:
    __slots__ = ("allowed", "buf", "buffers", "cost", "end", "pos", "set_by", "used")

    def __init__(
        self, buf: bytes, pos: int, buffers: Sequence[Buffer], allowed: int, set_by: str
    ) -> None:
        self.buf = buf
        self.end = len(buf)
        self.pos = pos
        self.buffers = buffers
        self.used = [False] * len(buffers)
        self.cost = 0
        self.allowed = allowed
        self.set_by = set_by

    def over_budget(self) -> NoReturn:
        raise UnsafeResultError(
            f"safe-mode result refused at byte {self.pos}: decoded, it would take more than "
            f"{self.allowed} bytes of memory, its budget ({self.set_by})"
        )

    def fail(self, why: str) -> NoReturn:
        raise UnsafeResultError(f"malformed safe-mode result at byte {self.pos}: {why}")

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n > self.end - pos:
            self.fail(f"{n} bytes declared, {self.end - pos} left")
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def uvarint(self) -> int:
        buf, pos, end = self.buf, self.pos, self.end
        if pos < end and buf[pos] < 0x80:
            self.pos = pos + 1
            return buf[pos]
        result = shift = 0
        while True:
            if pos >= end:
                self.fail("truncated length")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 70:
                self.fail("length longer than 10 bytes")
        self.pos = pos
        return result

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        pos = self.pos
        if st.size > self.end - pos:
            self.fail("truncated value")
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)

    def tag(self) -> int:
        pos = self.pos
        if pos >= self.end:
            self.fail("truncated: a value was expected")
        self.pos = pos + 1
        return self.buf[pos]

    def tz(self) -> _dt.timezone | None:
        import datetime as _dt

        tag = self.tag()
        if tag == 0x4E:  # N
            return None
        if tag != 0x7A:  # z
            self.fail(f"unknown time zone tag {tag:#x}")
        (offset,) = self.unpack(_OFFSET)
        kind = self.tag()
        if kind == 0x4E:
            name = None
        elif kind == 0x73:  # s
            name = _str(self)
        else:
            self.fail("a time zone name must be a str or None")
        try:
            delta = _dt.timedelta(microseconds=offset)
            return _dt.timezone(delta) if name is None else _dt.timezone(delta, name)
        except (ValueError, OverflowError) as exc:
            self.fail(f"invalid time zone: {exc}")

    def hashed(self, items: list[Any], kind: str) -> None:
        if len(items) <= MAX_HASH_COLLISIONS:
            return  # too few to flood; unhashable ones fail when the container is built
        counts: dict[int, int] = {}
        for item in items:
            try:
                h = hash(item)
            except TypeError:
                self.fail(f"unhashable {kind} of type {type(item).__name__}")
            seen = counts.get(h, 0) + 1
            if seen > MAX_HASH_COLLISIONS:
                self.fail(f"more than {MAX_HASH_COLLISIONS} {kind}s share one hash value")
            counts[h] = seen

    def finish(self, tag: int, items: list[Any]) -> object:
        if tag == 0x6C:  # l
            return items
        if tag == 0x74:  # t
            return tuple(items)
        if tag == 0x64:  # d
            keys = items[0::2]
            self.hashed(keys, "dict key")
            try:
                result = dict(zip(keys, items[1::2], strict=True))
            except TypeError:
                self.fail(f"unhashable dict key among {len(keys)}")
            if len(result) != len(keys):
                self.fail("duplicate dict keys")
            return result
        self.hashed(items, "set element")
        try:
            built = set(items) if tag == 0x53 else frozenset(items)  # S, Z
        except TypeError:
            self.fail(f"unhashable set element among {len(items)}")
        if len(built) != len(items):
            self.fail("duplicate set elements")
        return built

    def run(self) -> object:
        # each frame: [tag, items still expected, items so far]
        stack: list[list[Any]] = []
        scalars = _SCALARS
        value: object
        buf = self.buf
        # What the decoded value costs in memory, against the budget: a hostile stream of
        # tiny containers would otherwise cost ~100x its size. Each object is charged its
        # own size (sys.getsizeof; a container's includes its slots and table) when it is
        # built, and a container the least its slots take as soon as it is declared.
        sizeof = _sizeof
        cost = self.cost
        allowed = self.allowed
        while True:
            pos = self.pos
            if pos >= self.end:
                self.fail("truncated: a value was expected")
            tag = buf[pos]
            self.pos = pos + 1
            if tag in _CONTAINERS:
                n = self.uvarint()
                if tag == 0x64:  # d: a key and a value per entry
                    n *= 2
                # every item takes at least one byte: refuse counts the data cannot hold
                # before looping over them
                if n > self.end - self.pos:
                    self.fail(f"{n} items declared, {self.end - self.pos} bytes left")
                if len(stack) >= MAX_DEPTH:
                    self.fail(f"values nested deeper than {MAX_DEPTH} levels")
                # the least its items' slots will take, before they are read
                if cost + 8 * n > allowed:
                    self.cost = cost
                    self.over_budget()
                if n:
                    stack.append([tag, n, []])
                    continue
                value = self.finish(tag, [])
                cost += sizeof(value)
                if cost > allowed:
                    self.cost = cost
                    self.over_budget()
            elif tag == 0x73:  # s, the most common scalar: inlined
                n = self.uvarint()
                pos = self.pos
                if n > self.end - pos:
                    self.fail(f"{n} bytes declared, {self.end - pos} left")
                self.pos = pos + n
                try:
                    value = buf[pos : pos + n].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError as exc:
                    self.fail(f"invalid UTF-8 in a str: {exc.reason}")
                cost += sizeof(value)
            else:
                handler = scalars.get(tag)
                if handler is None:
                    self.pos -= 1
                    self.fail(f"unknown tag {tag:#04x}")
                value = handler(self)
                cost += sizeof(value)
            if cost > allowed:
                self.cost = cost
                self.over_budget()
            while stack:
                frame = stack[-1]
                frame[2].append(value)
                frame[1] -= 1
                if frame[1]:
                    break
                stack.pop()
                value = self.finish(frame[0], frame[2])
                cost += sizeof(value)
                if cost > allowed:
                    self.cost = cost
                    self.over_budget()
            else:
                return value


def _int(d: _Decoder) -> object:
    return int.from_bytes(d.take(d.uvarint()), "little", signed=True)


def _float(d: _Decoder) -> object:
    return d.unpack(_F64)[0]


def _complex(d: _Decoder) -> object:
    real, imag = d.unpack(_C128)
    return complex(real, imag)


def _str(d: _Decoder) -> str:
    raw = d.take(d.uvarint())
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        d.fail(f"invalid UTF-8 in a str: {exc.reason}")


def _bytes(d: _Decoder) -> object:
    return d.take(d.uvarint())


def _oob_bytes(d: _Decoder) -> object:
    index = d.uvarint()
    if index >= len(d.buffers):
        d.fail(f"out-of-band buffer {index} requested, {len(d.buffers)} given")
    if d.used[index]:
        d.fail(f"out-of-band buffer {index} used twice")
    d.used[index] = True
    buf = d.buffers[index]
    return buf if type(buf) is bytes else bytes(buf)


def _decimal(d: _Decoder) -> object:
    import decimal

    raw = d.take(d.uvarint())
    try:
        return decimal.Decimal(raw.decode("ascii"))
    except (UnicodeDecodeError, ArithmeticError, ValueError):
        d.fail("invalid Decimal")


def _checked(d: _Decoder, build: Callable[[], object], what: str) -> object:
    try:
        return build()
    except (ValueError, OverflowError) as exc:
        d.fail(f"invalid {what}: {exc}")


def _timedelta(d: _Decoder) -> object:
    import datetime as _dt

    days, seconds, micro = d.unpack(_TIMEDELTA)
    return _checked(d, lambda: _dt.timedelta(days, seconds, micro), "timedelta")


def _date(d: _Decoder) -> object:
    import datetime as _dt

    fields = d.unpack(_DATE)
    return _checked(d, lambda: _dt.date(*fields), "date")


def _time(d: _Decoder) -> object:
    import datetime as _dt

    h, m, s, us, fold = d.unpack(_TIME)
    tz = d.tz()
    return _checked(d, lambda: _dt.time(h, m, s, us, tz, fold=fold), "time")


def _datetime(d: _Decoder) -> object:
    import datetime as _dt

    y, mo, day, h, m, s, us, fold = d.unpack(_DATETIME)
    tz = d.tz()
    return _checked(d, lambda: _dt.datetime(y, mo, day, h, m, s, us, tz, fold=fold), "datetime")


_CONTAINERS = frozenset(b"ltdSZ")
_SCALARS: dict[int, Callable[[_Decoder], object]] = {
    ord(tag): fn
    for tag, fn in {
        "N": lambda d: None,
        "T": lambda d: True,
        "F": lambda d: False,
        "i": _int,
        "f": _float,
        "c": _complex,
        "s": _str,
        "b": _bytes,
        "B": _oob_bytes,
        "M": _decimal,
        "R": _timedelta,
        "D": _date,
        "H": _time,
        "W": _datetime,
    }.items()
}


def budget(received: int, max_size: int | None = None) -> tuple[int, str]:
    """The memory a decoded value of ``received`` bytes may take, and what set it."""
    proportional = AMPLIFICATION * received + BUDGET_SLACK
    if max_size is not None and max_size < proportional:
        return max_size, f"max_decoded={max_size}"
    return proportional, f"{AMPLIFICATION}x the {received} bytes received + {BUDGET_SLACK}"


def decode(data: Buffer, buffers: Sequence[Buffer] = (), *, max_size: int | None = None) -> object:
    """Decode a stream made by :func:`encode` or :func:`encode_parts`, running no code from it.

    ``buffers`` are the out-of-band parts that followed the stream; a ``bytes``
    buffer is returned as it is (no copy), any other buffer is copied into ``bytes``.

    ``max_size`` caps the memory the decoded value may take (see :func:`budget`).

    Raises :class:`UnsafeResultError` for anything but a well-formed stream: wrong
    magic or version, truncation, an unknown tag, a length larger than the data,
    nesting deeper than ``MAX_DEPTH``, invalid UTF-8 or dates, unhashable,
    duplicate or hash-flooding keys, trailing bytes, unused or reused buffers, a
    value that would take more memory than its budget.
    """
    # Indexing and slicing bytes is markedly faster than a memoryview; the stream is small
    # when large bytes travel out-of-band, and is usually received as bytes anyway.
    buf = data if type(data) is bytes else memoryview(data).cast("B").tobytes()
    if buf[: len(MAGIC)] != MAGIC:
        raise UnsafeResultError(
            f"not a safe-mode result: the stream does not start with the codec's magic {MAGIC!r}"
        )
    received = len(buf) + sum(memoryview(b).nbytes for b in buffers)
    d = _Decoder(buf, len(MAGIC), buffers, *budget(received, max_size))
    result = d.run()
    if d.pos != d.end:
        d.fail(f"{d.end - d.pos} trailing bytes after the value")
    if not all(d.used):
        d.fail(f"out-of-band buffer {d.used.index(False)} was not used")
    return result
