"""Kinds of directive values: how each is normalised, sent over D-Bus, spelled and merged.

A :class:`Kind` bundles four pure functions. ``convert`` turns a user value
(systemd's string or a Python value) into the normal form, and accepts the
normal form unchanged; ``emit`` turns the normal form into the
``(bus name, signature, value)`` triples ``systemd-run -p`` would send;
``render`` gives the value(s) in systemd's spelling, one per assignment;
``merge``, for list-valued directives, combines two normal forms as two
unit-file lines would. Each factory below follows the matching branch of
systemd 252's ``bus_append_*_property()``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from sandboxed.directives.values import (
    INFINITY,
    UINT64_MAX,
    USEC_PER_SEC,
    Invalid,
    Percent,
    format_mode,
    format_nsec,
    format_size,
    format_timespan,
    join_words,
    parse_boolean,
    parse_int,
    parse_mode,
    parse_percent,
    parse_size,
    parse_string,
    parse_timespan,
    parse_words,
    split_words,
    timedelta_to_usec,
    usec_to_timedelta,
)

#: ``(bus property name, D-Bus signature, value)``: what ``StartTransientUnit`` gets.
Property = tuple[str, str, object]

Convert = Callable[[object], Hashable]
Emit = Callable[[str, Any], list[Property]]
Render = Callable[[Any], list[str]]
Merge = Callable[[Any, Any], Hashable]


def _no_extra(bus: str) -> tuple[str, ...]:
    return ()


@attrs.frozen
class Kind:
    """How one kind of directive value is normalised, emitted, spelled and merged."""

    signature: str
    accepted: str
    convert: Convert
    emit: Emit
    render: Render
    merge: Merge | None = None
    extra: Callable[[str], tuple[str, ...]] = _no_extra
    #: Values that later systemd versions added: (value, version), in systemd's spelling.
    values_since: tuple[tuple[str, int], ...] = ()

    def since(self, value: Any) -> int:
        """The systemd version a normalised value needs (0: any the table covers)."""
        if isinstance(value, str):
            for v, version in self.values_since:
                if v == value:
                    return version
        return 0

    def extra_bus(self, bus: str) -> tuple[str, ...]:
        """Bus properties this kind may set besides ``bus``."""
        return self.extra(bus)

    def render_all(self, value: Any) -> list[str]:
        """The value in systemd's spelling, one string per assignment."""
        return self.render(value)


def _one(sig: str) -> Emit:
    def emit(bus: str, value: Any) -> list[Property]:
        return [(bus, sig, value)]

    return emit


def _single(fmt: Callable[[Any], str]) -> Render:
    return lambda value: [fmt(value)]


def scalar(sig: str, accepted: str, convert: Convert, fmt: Callable[[Any], str] = str) -> Kind:
    """A single value sent as one property of signature ``sig``."""
    return Kind(sig, accepted, convert, _one(sig), _single(fmt))


# -- booleans, strings, enumerations --------------------------------------------------------

BOOL = scalar(
    "b",
    "a boolean: True/False, yes/no, true/false, on/off, 1/0",
    parse_boolean,
    lambda v: "yes" if v else "no",
)


def _str_convert(pattern: str | None, what: str) -> Convert:
    def convert(value: object) -> Hashable:
        text = parse_string(value)
        if pattern is not None and not re.fullmatch(pattern, text):
            raise Invalid(f"not {what}")
        return text

    return convert


def string(accepted: str = "a string", pattern: str | None = None) -> Kind:
    """A string sent as ``s``, optionally checked against a regular expression."""
    return scalar("s", accepted, _str_convert(pattern, accepted), lambda v: v)


STRING = string()
NONEMPTY = string("a non-empty string", r"(?s).+")
ABSPATH = string("an absolute path (str or pathlib.Path)", r"/.*")


def enum(
    choices: Sequence[str],
    *,
    booleans: tuple[str, str] | None = None,
    extra: str = "",
    since: Mapping[str, int] | None = None,
) -> Kind:
    """One of ``choices`` sent as ``s``; with ``booleans`` (true, false) a boolean maps to those.

    ``since`` maps choices that later systemd versions added to that version.
    """
    listing = ", ".join(choices)
    accepted = f"one of {listing}" + (" or a boolean" if booleans else "") + extra

    def convert(value: object) -> Hashable:
        if booleans is not None and not (isinstance(value, str) and value in choices):
            try:
                return booleans[0] if parse_boolean(value) else booleans[1]
            except Invalid:
                pass
        if isinstance(value, str) and value in choices:
            return value
        raise Invalid("not one of the choices")

    kind = scalar("s", accepted, convert, lambda v: v)
    if since:
        kind = attrs.evolve(kind, values_since=tuple(since.items()))
    return kind


def ex_enum(values: Mapping[str, int]) -> Kind:
    """A boolean, or one of ``values`` (value -> the systemd version that added it).

    A boolean is sent as the directive's own ``b`` property, which every systemd
    has; a named value as the ``…Ex`` string property systemd added with it
    (``PrivateUsers=identity`` travels as ``PrivateUsersEx`` ``s``), as a
    unit file spells it and as ``systemd-run -p NAMEEx=VALUE`` sends it.
    """
    accepted = f"a boolean, or one of {', '.join(values)}"

    def convert(value: object) -> Hashable:
        if isinstance(value, str) and value in values:
            return value
        try:
            return parse_boolean(value)
        except Invalid:
            raise Invalid("neither a boolean nor one of the named values") from None

    def emit(bus: str, value: Any) -> list[Property]:
        if isinstance(value, bool):
            return [(bus, "b", value)]
        return [(bus + "Ex", "s", value)]

    return Kind(
        "b",
        accepted,
        convert,
        emit,
        lambda v: [("yes" if v else "no") if isinstance(v, bool) else v],
        extra=lambda bus: (bus + "Ex",),
        values_since=tuple(values.items()),
    )


def named_int(
    sig: str, names: Mapping[str, int], lo: int, hi: int, *, what: str, numbers: bool = True
) -> Kind:
    """An integer given by name (``names``) or number (``lo..hi``); spelled by name if it can be."""
    by_value = {v: k for k, v in reversed(list(names.items()))}
    accepted = f"{what}: one of {', '.join(names)}" + (
        f", or a number {lo}..{hi}" if numbers else ""
    )

    def convert(value: object) -> Hashable:
        if isinstance(value, str) and value.strip() in names:
            return names[value.strip()]
        if not numbers:
            if isinstance(value, int) and not isinstance(value, bool) and value in by_value:
                return value
            raise Invalid("unknown name")
        return parse_int(value, lo, hi)

    return scalar(sig, accepted, convert, lambda v: by_value.get(v, str(v)))


def integer(sig: str, lo: int, hi: int, what: str = "an integer") -> Kind:
    """A plain integer in ``lo..hi``."""
    return scalar(sig, f"{what} from {lo} to {hi}", lambda v: parse_int(v, lo, hi))


MODE = scalar("u", "an octal file mode: 0o027, '0027' or '027'", parse_mode, format_mode)


# -- time spans and sizes -------------------------------------------------------------------

_SPAN = (
    "a time span: datetime.timedelta (timedelta.max is infinity), a number of seconds "
    "(int or float), 'infinity', or systemd's '5min 3s', '1.5h', '200ms'"
)


def span(value: object) -> datetime.timedelta:
    """Normalise a time span to a timedelta (``timedelta.max`` is infinity)."""
    return usec_to_timedelta(parse_timespan(value))


def _span_text(value: datetime.timedelta) -> str:
    return format_timespan(timedelta_to_usec(value))


def timespan(*, empty_is_infinity: bool = False) -> Kind:
    """A time span normalised to a timedelta, sent as ``t`` microseconds (bus name ``...USec``)."""

    def convert(value: object) -> Hashable:
        if empty_is_infinity and isinstance(value, str) and not value.strip():
            return datetime.timedelta.max
        return span(value)

    accepted = _SPAN + (" ('' for infinity)" if empty_is_infinity else "")
    return Kind(
        "t",
        accepted,
        convert,
        lambda bus, v: [(bus, "t", timedelta_to_usec(v))],
        lambda v: [_span_text(v)],
    )


TIMESPAN = timespan()
NSEC = scalar(
    "t",
    "a time span in nanoseconds: an int of ns, datetime.timedelta, "
    "or systemd's '50us', '1ms', '100ns'",
    lambda v: parse_timespan(v, default_unit=1, nanoseconds=True),
    format_nsec,
)


def _timeout_sec_emit(bus: str, value: Any) -> list[Property]:
    usec = timedelta_to_usec(value)
    return [("TimeoutStartUSec", "t", usec), ("TimeoutStopUSec", "t", usec)]


TIMEOUT_BOTH = Kind(
    "t",
    _SPAN,
    span,
    _timeout_sec_emit,
    lambda v: [_span_text(v)],
    extra=lambda bus: ("TimeoutStopUSec",),
)


def _memory_convert(value: object) -> Hashable:
    if isinstance(value, (Percent, float)) or (
        isinstance(value, str) and value.strip().endswith(("%", "‰", "‱"))
    ):
        return parse_percent(value)
    return parse_size(value)


def _limit_emit(bus: str, value: Any) -> list[Property]:
    if isinstance(value, Percent):
        return [(bus + "Scale", "u", value.scale32())]
    return [(bus, "t", value)]


def _limit_render(value: Any) -> list[str]:
    return [str(value) if isinstance(value, Percent) else format_size(value)]


MEMORY = Kind(
    "t",
    "bytes: an int, systemd's '512M', '1.5G' (powers of 1024), 'infinity', "
    "or a share of physical memory: '50%' or a float fraction 0.5",
    _memory_convert,
    _limit_emit,
    _limit_render,
    extra=lambda bus: (bus + "Scale",),
)


def _tasks_convert(value: object) -> Hashable:
    if isinstance(value, (Percent, float)) or (
        isinstance(value, str) and value.strip().endswith(("%", "‰", "‱"))
    ):
        return parse_percent(value)
    if isinstance(value, str) and value.strip() == "infinity":
        return INFINITY
    return parse_int(value, 0, UINT64_MAX)


TASKS = Kind(
    "t",
    "a number of tasks (int), 'infinity', "
    "or a share of the system's limit: '10%' or a float fraction",
    _tasks_convert,
    _limit_emit,
    lambda v: [str(v) if isinstance(v, Percent) else ("infinity" if v == INFINITY else str(v))],
    extra=lambda bus: (bus + "Scale",),
)


def _cpu_quota_convert(value: object) -> Hashable:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 1:
        # 20 would be 20 CPUs (2000 %): almost always 20 % was meant.
        raise Invalid(
            f"a bare number above 1 is ambiguous: for {value:g} % write {value / 100:g} or "
            f"'{value:g}%'; for {value:g} CPUs write '{value * 100:g}%'"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    result = parse_percent(value, bounded=False)
    if result.permyriad == 0:
        raise Invalid("CPU quota too small")
    return result


def _cpu_quota_emit(bus: str, value: Any) -> list[Property]:
    return [("CPUQuotaPerSecUSec", "t", value.permyriad * USEC_PER_SEC // 10000)]


CPU_QUOTA = Kind(
    "t",
    "a share of one CPU: '20%', '150%', or a fraction of one CPU up to 1 (0.2 is 20%)",
    _cpu_quota_convert,
    _cpu_quota_emit,
    lambda v: [str(v)],
)


def _scale_convert(value: object) -> Hashable:
    return parse_percent(value)


PERCENT_SCALE = scalar("u", "a percentage '60%' or a float fraction 0.6", _scale_convert)
PERCENT_SCALE = attrs.evolve(PERCENT_SCALE, emit=lambda bus, v: [(bus, "u", v.scale32())])


# -- lists ----------------------------------------------------------------------------------


def append_merge(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    # An empty assignment resets the list, as in a unit file.
    return b if not b else a + b


def strv(
    *,
    item: str | None = None,
    what: str = "strings",
    cunescape: bool = False,
    check: Callable[[str], None] | None = None,
) -> Kind:
    """A list of words sent as ``as``; ``item`` is a regular expression each word must match."""
    accepted = (
        f"a list of {what}: a space-separated string (quotes group) "
        "or a list/tuple of str or Path; '' resets"
    )

    def convert(value: object) -> Hashable:
        words = parse_words(value, cunescape=cunescape)
        for word in words:
            if item is not None and not re.fullmatch(item, word):
                raise Invalid(f"bad item {word!r}")
            if check is not None:
                check(word)
        return words

    return Kind(
        "as",
        accepted,
        convert,
        lambda bus, v: [(bus, "as", list(v))],
        lambda v: [join_words(v, cunescape=cunescape)],
        append_merge,
    )


_PATH_ITEM = r"[-+]*/.*"


def paths(prefixes: str = "-+") -> Kind:
    """A list of absolute paths, each optionally led by systemd's ``-`` (and ``+``) prefixes."""
    pattern = f"[{re.escape(prefixes)}]*/.*" if prefixes else "/.*"
    what = "absolute paths" + (f" (optional prefixes {' '.join(prefixes)})" if prefixes else "")
    return strv(item=pattern, what=what)


def _env_check(word: str) -> None:
    name, eq, _ = word.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise Invalid(f"{word!r} is not VAR=VALUE")


def _env_convert(value: object) -> Hashable:
    if isinstance(value, Mapping):
        value = [f"{k}={v}" for k, v in value.items()]
    words = parse_words(value, cunescape=True)
    for word in words:
        _env_check(word)
    return words


ENVIRONMENT = Kind(
    "as",
    "VAR=VALUE assignments: a dict, a list of 'VAR=VALUE', or systemd's string "
    "'A=1 \"B=two words\"' (C escapes decoded); '' resets",
    _env_convert,
    lambda bus, v: [(bus, "as", list(v))],
    lambda v: [join_words(v, cunescape=True)],
    append_merge,
)


def entries(
    parse_entry: Callable[[object], Hashable],
    sig: str,
    to_bus: Callable[[Any], object],
    fmt: Callable[[Any], str],
    accepted: str,
    *,
    bus_name: str | None = None,
    empty: Callable[[str], list[Property]] | None = None,
    tuple_entries: bool = False,
) -> Kind:
    """A list of structured entries, one per assignment (``DeviceAllow=``, ``IO...Max=``).

    A string is one entry; a list/tuple holds entries; ``''`` or an empty list
    resets. With ``tuple_entries``, entries are tuples, and a tuple of
    non-tuples is one entry: ``("/dev/null", "rw")``.
    """

    def convert(value: object) -> Hashable:
        if isinstance(value, str):
            return () if not value.strip() else (parse_entry(value),)
        if (
            tuple_entries
            and isinstance(value, tuple)
            and value
            and not any(isinstance(v, tuple) for v in value)
        ):
            return (parse_entry(value),)
        if isinstance(value, Iterable):
            return tuple(parse_entry(v) for v in value)
        raise Invalid(f"expected a string or a list, got {type(value).__name__}")

    def emit(bus: str, value: Any) -> list[Property]:
        name = bus_name or bus
        if not value and empty is not None:
            return empty(name)
        return [(name, sig, [to_bus(v) for v in value])]

    return Kind(
        sig,
        accepted + "; a list of those for several; '' resets",
        convert,
        emit,
        lambda v: [fmt(e) for e in v] or [""],
        append_merge,
    )


# -- filters: (bas) allow/deny lists --------------------------------------------------------


def _filter_clause(value: object, item: str) -> tuple[bool, tuple[str, ...]]:
    if isinstance(value, str):
        text = value.strip()
        allow = not text.startswith("~")
        words = split_words(text[1:] if not allow else text)
    elif isinstance(value, Iterable):
        words = parse_words(value)
        allow = True
        if words and words[0].startswith("~"):
            allow = False
            words = ((words[0][1:],) if words[0] != "~" else ()) + words[1:]
    else:
        raise Invalid(f"expected a string or a list, got {type(value).__name__}")
    for word in words:
        if not re.fullmatch(item, word):
            raise Invalid(f"bad item {word!r}")
    return allow, tuple(sorted(set(words)))


def _is_clauses(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and bool(value)
        and all(
            isinstance(c, tuple)
            and len(c) == 2
            and isinstance(c[0], bool)
            and isinstance(c[1], tuple)
            for c in value
        )
    )


def _clauses_merge(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    if not b[0][1]:
        return b
    if a[-1][0] == b[0][0] and a[-1][1]:
        joined = (a[-1][0], tuple(sorted(set(a[-1][1]) | set(b[0][1]))))
        return (*a[:-1], joined, *b[1:])
    return a + b


def filter_list(item: str, what: str) -> Kind:
    """An allow list, or with a leading ``~`` a deny list, sent as ``(bas)``.

    The normal form is a tuple of clauses ``(allow, items)``; merged values
    keep their order, and are sent as one property each, so that systemd
    combines them exactly as it combines unit-file lines.
    """

    def convert(value: object) -> Hashable:
        if isinstance(value, tuple) and _is_clauses(value):
            return tuple(_filter_clause(("" if a else "~") + join_words(i), item) for a, i in value)
        return (_filter_clause(value, item),)

    def render(value: Any) -> list[str]:
        return [("" if allow else "~") + join_words(items) for allow, items in value]

    return Kind(
        "(bas)",
        f"{what}: a space-separated string, with a leading '~' for a deny list, "
        "or a list/tuple (first item may start with '~'); '' resets",
        convert,
        lambda bus, v: [(bus, "(bas)", (allow, list(items))) for allow, items in v],
        render,
        _clauses_merge,
    )


def _set_merge(a: tuple[bool, tuple[str, ...]], b: tuple[bool, tuple[str, ...]]) -> Hashable:
    # Unit-file semantics: a later line ORs in (an allow line) or ANDs out (a '~' line);
    # in set terms, equal signs unite, opposite signs subtract, and an empty value replaces.
    (neg_a, items_a), (neg_b, items_b) = a, b
    if not items_b:
        return b
    if neg_a == neg_b:
        return (neg_a, tuple(sorted(set(items_a) | set(items_b))))
    return (neg_a, tuple(sorted(set(items_a) - set(items_b))))


def mask_set(
    names: Mapping[str, int],
    all_mask: int,
    what: str,
    *,
    lower: bool,
    booleans: bool = False,
    order: Sequence[str] | None = None,
    plural: str = "",
) -> Kind:
    """A set of named bits sent as a ``t`` mask, with a leading ``~`` for its complement.

    The normal form is ``(negated, names)``; ``booleans`` maps True to the empty
    set (nothing allowed) and False to its complement (``RestrictNamespaces=``).
    """
    canonical = {(k.lower() if lower else k): k for k in names}
    by_bit = {v: k for k, v in names.items()}
    rank = {n: i for i, n in enumerate(order or names)}

    def norm(word: str) -> str:
        if word.isdigit() and int(word) in by_bit:
            return by_bit[int(word)]
        key = word.lower() if lower else word
        if key not in canonical:
            raise Invalid(f"unknown {what} {word!r}")
        return canonical[key]

    def convert(value: object) -> Hashable:
        if booleans and not isinstance(value, tuple):
            try:
                return (not parse_boolean(value), ())
            except Invalid:
                pass
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], bool)
            and isinstance(value[1], tuple)
        ):
            negated, words = value[0], value[1]
        elif isinstance(value, str):
            text = value.strip()
            negated = text.startswith("~")
            words = split_words(text[1:] if negated else text)
        elif isinstance(value, Iterable):
            words = parse_words(value)
            negated = bool(words) and words[0].startswith("~")
            if negated:
                words = ((words[0][1:],) if words[0] != "~" else ()) + words[1:]
        else:
            raise Invalid(f"expected a string or a list, got {type(value).__name__}")
        return (negated, tuple(sorted({norm(w) for w in words}, key=lambda n: rank[n])))

    def emit(bus: str, value: Any) -> list[Property]:
        negated, words = value
        mask = 0
        for w in words:
            mask |= names[w]
        return [(bus, "t", (all_mask & ~mask) if negated else mask)]

    def render(value: Any) -> list[str]:
        negated, words = value
        if booleans and not words:
            return ["no" if negated else "yes"]
        return [("~" if negated else "") + " ".join(words)]

    return Kind(
        "t",
        f"{plural or what + 's'}: a space-separated string or a list, "
        "with a leading '~' for all but those"
        + ("; or a boolean (True restricts all)" if booleans else ""),
        convert,
        emit,
        render,
        _set_merge,
    )


# -- raw D-Bus values -----------------------------------------------------------------------

_BASIC_INT = {
    "y": (0, 2**8 - 1),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
    "h": (0, 2**32 - 1),
}


def _split_signature(sig: str) -> list[str]:
    """Split a signature into complete types."""
    out: list[str] = []
    i = 0
    while i < len(sig):
        j = _complete_type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _complete_type_end(sig: str, i: int) -> int:
    if i >= len(sig):
        raise Invalid("incomplete signature")
    c = sig[i]
    if c == "a":
        return _complete_type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while j < len(sig) and sig[j] != close:
            j = _complete_type_end(sig, j)
        if j >= len(sig):
            raise Invalid("unbalanced signature")
        return j + 1
    if c in _BASIC_INT or c in "bdsogv":
        return i + 1
    raise Invalid(f"unknown type code {c!r}")


def check_signature(sig: str, value: object) -> Hashable:
    """Check ``value`` against one complete D-Bus type ``sig``; return it frozen (tuples)."""
    parts = _split_signature(sig)
    if len(parts) != 1:
        raise Invalid("the signature must be a single complete type")
    return _check(sig, value)


def _check(sig: str, value: object) -> Hashable:
    c = sig[0]
    if c in _BASIC_INT:
        lo, hi = _BASIC_INT[c]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise Invalid(f"{value!r} is not a {sig!r} integer in {lo}..{hi}")
        return value
    if c == "b":
        if not isinstance(value, bool):
            raise Invalid(f"{value!r} is not a bool")
        return value
    if c == "d":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"{value!r} is not a float")
        return float(value)
    if c in "sog":
        if not isinstance(value, str):
            raise Invalid(f"{value!r} is not a string")
        return value
    if c == "v":
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)):
            raise Invalid("a variant is a (signature, value) tuple")
        return (value[0], check_signature(value[0], value[1]))
    if c == "(":
        fields = _split_signature(sig[1:-1])
        if not isinstance(value, (tuple, list)) or len(value) != len(fields):
            raise Invalid(f"{value!r} is not a {len(fields)}-tuple for {sig!r}")
        return tuple(_check(f, v) for f, v in zip(fields, value, strict=True))
    if c == "a":
        inner = sig[1:]
        if inner == "y":
            if not isinstance(value, (bytes, bytearray)):
                raise Invalid(f"{value!r} is not bytes")
            return bytes(value)
        if inner.startswith("{"):
            k, v = _split_signature(inner[1:-1])
            if not isinstance(value, Mapping):
                raise Invalid(f"{value!r} is not a mapping")
            return tuple((_check(k, kk), _check(v, vv)) for kk, vv in value.items())
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise Invalid(f"{value!r} is not a list")
        return tuple(_check(inner, v) for v in value)
    raise Invalid(f"unsupported signature {sig!r}")


def thaw(sig: str, value: Any) -> object:
    """The frozen value of :func:`check_signature` in the shapes jeepney serialises."""
    c = sig[0]
    if c == "v":
        return (value[0], thaw(value[0], value[1]))
    if c == "(":
        return tuple(thaw(f, v) for f, v in zip(_split_signature(sig[1:-1]), value, strict=True))
    if c == "a":
        inner = sig[1:]
        if inner == "y":
            return value
        if inner.startswith("{"):
            k, v = _split_signature(inner[1:-1])
            return {thaw(k, kk): thaw(v, vv) for kk, vv in value}
        return [thaw(inner, v) for v in value]
    return value
