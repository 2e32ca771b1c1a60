"""Parsers for the value syntaxes of systemd directives, and their normal forms.

Each ``parse_*`` function takes either systemd's string spelling (as in a unit
file or ``systemd-run -p``) or a natural Python value, and returns one normal
form: a plain, hashable value that the same function accepts again unchanged
(``parse_x(parse_x(v)) == parse_x(v)``). Each ``format_*`` function turns a
normal form back into a string that systemd parses to the same value.

The parsing rules follow systemd 252 (``parse_size()``, ``parse_time()``,
``parse_permyriad()``, ``parse_boolean()``, ``extract_first_word()``).
Errors are raised as :class:`Invalid`, which the directive table turns into
:class:`~sandboxed.InvalidDirectiveValueError` with the directive's name.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import signal
from collections.abc import Iterable

import attrs

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
#: systemd's "infinity" for time spans (``USEC_INFINITY``) and limits (``CGROUP_LIMIT_MAX``).
INFINITY = UINT64_MAX

USEC_PER_MSEC = 1_000
USEC_PER_SEC = 1_000_000
USEC_PER_MINUTE = 60 * USEC_PER_SEC
USEC_PER_HOUR = 60 * USEC_PER_MINUTE
USEC_PER_DAY = 24 * USEC_PER_HOUR
USEC_PER_WEEK = 7 * USEC_PER_DAY
USEC_PER_MONTH = 2_629_800 * USEC_PER_SEC
USEC_PER_YEAR = 31_557_600 * USEC_PER_SEC

_WHITESPACE = " \t\n\r"


class Invalid(ValueError):
    """A value a parser does not accept; ``str()`` is the reason."""


# -- booleans -------------------------------------------------------------------------------

_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_FALSE = frozenset({"0", "no", "n", "false", "f", "off"})


def parse_boolean(value: object) -> bool:
    """``True``/``False``, 0/1, or systemd's yes/no/true/false/on/off/y/n/t/f/1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise Invalid("not a boolean")


# -- integers -------------------------------------------------------------------------------


def parse_int(value: object, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``, given as an int or a decimal string."""
    if isinstance(value, bool):
        raise Invalid("a boolean is not a number")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise Invalid("not an integer")
        number = int(text)
    elif isinstance(value, int):
        number = value
    else:
        raise Invalid(f"expected an integer, got {type(value).__name__}")
    if not lo <= number <= hi:
        raise Invalid(f"out of range {lo}..{hi}")
    return number


def parse_mode(value: object) -> int:
    """A file mode: an int (``0o027``) or an octal string (``"0027"``, ``"027"``)."""
    if isinstance(value, bool):
        raise Invalid("a boolean is not a mode")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-7]{1,5}", value.strip()):
        number = int(value.strip(), 8)
    else:
        raise Invalid("not an octal file mode")
    if not 0 <= number <= 0o7777:
        raise Invalid("a mode is between 0000 and 7777")
    return number


def format_mode(mode: int) -> str:
    """``0o22`` → ``"0022"``."""
    return f"{mode:04o}"


# -- sizes ----------------------------------------------------------------------------------

_SIZE_SUFFIXES = ("E", "P", "T", "G", "M", "K", "B", "")
_SIZE_EXPONENT = {"E": 6, "P": 5, "T": 4, "G": 3, "M": 2, "K": 1, "B": 0, "": 0}
_SIZE_PART = re.compile(r"[ \t\n\r]*([0-9]+)(?:\.([0-9]*))?[ \t\n\r]*")


def parse_size(value: object, base: int = 1024, *, allow_infinity: bool = True) -> int:
    """A byte count: an int ≥ 0, ``"infinity"`` or systemd's ``"512M"``, ``"1.5G"``, ``"1G 512M"``.

    Suffixes K, M, G, T, P, E are powers of ``base`` (1024 for memory, 1000 for
    bandwidths). ``"infinity"`` is :data:`INFINITY`.
    """
    if isinstance(value, bool):
        raise Invalid("a boolean is not a size")
    if isinstance(value, int):
        if not 0 <= value <= UINT64_MAX:
            raise Invalid("a size is between 0 and 2**64-1")
        if value == INFINITY and not allow_infinity:
            raise Invalid("infinity is not accepted here")
        return value
    if not isinstance(value, str):
        raise Invalid(f"expected an int or a string, got {type(value).__name__}")
    if value.strip() == "infinity":
        if not allow_infinity:
            raise Invalid("infinity is not accepted here")
        return INFINITY
    total = 0
    pos = 0
    start = 0
    text = value
    while True:
        m = _SIZE_PART.match(text, pos)
        if not m:
            raise Invalid("not a size")
        whole, frac = m.group(1), m.group(2) or ""
        pos = m.end()
        for i in range(start, len(_SIZE_SUFFIXES)):
            if text.startswith(_SIZE_SUFFIXES[i], pos):
                break
        else:
            raise Invalid("unknown size suffix, or suffixes not in descending order")
        suffix = _SIZE_SUFFIXES[i]
        factor: int = base ** _SIZE_EXPONENT[suffix]
        # systemd computes the fraction in double precision and truncates.
        part = int(whole) * factor + int(float("0." + frac) * factor if frac else 0)
        total += part
        if total > UINT64_MAX:
            raise Invalid("too large")
        pos += len(suffix)
        start = i + 1
        if pos >= len(text):
            break
    return total


def format_size(size: int) -> str:
    """The shortest exact spelling: ``536870912`` → ``"512M"``, :data:`INFINITY` → infinity."""
    if size == INFINITY:
        return "infinity"
    for suffix in ("E", "P", "T", "G", "M", "K"):
        factor = 1024 ** _SIZE_EXPONENT[suffix]
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


# -- percentages ----------------------------------------------------------------------------


@attrs.frozen(order=True)
class Percent:
    """A percentage, held exactly in hundredths of a percent (permyriad), as systemd does."""

    permyriad: int = attrs.field(validator=attrs.validators.ge(0))

    def __str__(self) -> str:
        whole, rest = divmod(self.permyriad, 100)
        if rest == 0:
            return f"{whole}%"
        if rest % 10 == 0:
            return f"{whole}.{rest // 10}%"
        return f"{whole}.{rest:02d}%"

    def scale32(self) -> int:
        """The value scaled to ``0..2**32-1`` as systemd sends ``...Scale`` properties."""
        clamped = min(max(self.permyriad, 0), 10000)
        return (clamped * UINT32_MAX + 5000) // 10000

    @property
    def fraction(self) -> float:
        """0.2 for 20 %."""
        return self.permyriad / 10000


_PERCENT = re.compile(r"([0-9]+)(?:\.([0-9]{1,2}))?%")
_PERMILLE = re.compile(r"([0-9]+)(?:\.([0-9]))?‰")
_PERMYRIAD = re.compile(r"([0-9]+)‱")


def parse_percent(value: object, *, bounded: bool = True) -> Percent:
    """A percentage: ``"20%"``, ``"12.5%"``, ``"5‰"``, ``"3‱"``, a :class:`Percent`, or a float.

    A float is a fraction (``0.2`` is 20 %) rounded to hundredths of a percent.
    ``bounded`` limits the value to 100 %.
    """
    if isinstance(value, Percent):
        result = value
    elif isinstance(value, bool):
        raise Invalid("a boolean is not a percentage")
    elif isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise Invalid("a fraction must be finite and not negative")
        result = Percent(round(value * 10000))
    elif isinstance(value, str):
        result = _parse_percent_text(value.strip())
    else:
        raise Invalid(
            f"expected a percentage string or a float fraction, got {type(value).__name__}"
        )
    if bounded and result.permyriad > 10000:
        raise Invalid("more than 100%")
    if result.permyriad > 2**31 - 1:
        raise Invalid("too large")
    return result


def _parse_percent_text(text: str) -> Percent:
    if m := _PERMYRIAD.fullmatch(text):
        return Percent(int(m.group(1)))
    if m := _PERMILLE.fullmatch(text):
        return Percent(int(m.group(1)) * 10 + int(m.group(2) or "0"))
    if m := _PERCENT.fullmatch(text):
        frac = (m.group(2) or "").ljust(2, "0")
        return Percent(int(m.group(1)) * 100 + int(frac))
    raise Invalid("not a percentage such as 20% or 12.5%")


# -- time spans -----------------------------------------------------------------------------

# Order matters: systemd tries these prefixes in this order.
_TIME_UNITS: tuple[tuple[str, int], ...] = (
    ("seconds", USEC_PER_SEC),
    ("second", USEC_PER_SEC),
    ("sec", USEC_PER_SEC),
    ("s", USEC_PER_SEC),
    ("minutes", USEC_PER_MINUTE),
    ("minute", USEC_PER_MINUTE),
    ("min", USEC_PER_MINUTE),
    ("months", USEC_PER_MONTH),
    ("month", USEC_PER_MONTH),
    ("M", USEC_PER_MONTH),
    ("msec", USEC_PER_MSEC),
    ("ms", USEC_PER_MSEC),
    ("m", USEC_PER_MINUTE),
    ("hours", USEC_PER_HOUR),
    ("hour", USEC_PER_HOUR),
    ("hr", USEC_PER_HOUR),
    ("h", USEC_PER_HOUR),
    ("days", USEC_PER_DAY),
    ("day", USEC_PER_DAY),
    ("d", USEC_PER_DAY),
    ("weeks", USEC_PER_WEEK),
    ("week", USEC_PER_WEEK),
    ("w", USEC_PER_WEEK),
    ("years", USEC_PER_YEAR),
    ("year", USEC_PER_YEAR),
    ("y", USEC_PER_YEAR),
    ("usec", 1),
    ("us", 1),
    ("μs", 1),
    ("µs", 1),
)
_TIME_NUMBER = re.compile(r"([0-9]+)(?:\.([0-9]*))?")


def parse_timespan(
    value: object, *, default_unit: int = USEC_PER_SEC, nanoseconds: bool = False
) -> int:
    """A time span as an int of microseconds (of nanoseconds with ``nanoseconds``).

    Accepts a :class:`datetime.timedelta`, an int or float number of
    ``default_unit`` (seconds for ``...Sec=`` directives), ``"infinity"``, or
    systemd's spans: ``"5min 3s"``, ``"1.5h"``, ``"200ms"``, ``"90"`` (in
    ``default_unit``). :data:`INFINITY` stands for infinity.
    """
    if isinstance(value, bool):
        raise Invalid("a boolean is not a time span")
    if isinstance(value, datetime.timedelta):
        if value == datetime.timedelta.max:
            return INFINITY
        if value < datetime.timedelta(0):
            raise Invalid("a time span cannot be negative")
        usec = (value.days * 86400 + value.seconds) * USEC_PER_SEC + value.microseconds
        return _check_span(usec * 1000 if nanoseconds else usec)
    if isinstance(value, int):
        if value < 0:
            raise Invalid("a time span cannot be negative")
        if value == INFINITY:
            return INFINITY
        return _check_span(value * default_unit)
    if isinstance(value, float):
        if math.isinf(value) and value > 0:
            return INFINITY
        if not math.isfinite(value) or value < 0:
            raise Invalid("a time span must be finite and not negative")
        return _check_span(round(value * default_unit))
    if isinstance(value, str):
        return _parse_time_text(value, default_unit, _NSEC_UNITS if nanoseconds else _TIME_UNITS)
    raise Invalid(f"expected a time span, got {type(value).__name__}")


def usec_to_timedelta(usec: int) -> datetime.timedelta:
    """The normal form of a span: a timedelta; :data:`INFINITY` is ``timedelta.max``."""
    if usec == INFINITY:
        return datetime.timedelta.max
    return datetime.timedelta(microseconds=usec)


def timedelta_to_usec(span: datetime.timedelta) -> int:
    """The inverse of :func:`usec_to_timedelta`."""
    if span == datetime.timedelta.max:
        return INFINITY
    return (span.days * 86400 + span.seconds) * USEC_PER_SEC + span.microseconds


def _check_span(usec: int) -> int:
    if usec >= INFINITY:
        raise Invalid("too long (use 'infinity')")
    return usec


def _parse_time_text(text: str, default_unit: int, units: tuple[tuple[str, int], ...]) -> int:
    p = text.lstrip(_WHITESPACE)
    if p.startswith("infinity"):
        if p[len("infinity") :].strip(_WHITESPACE):
            raise Invalid("garbage after 'infinity'")
        return INFINITY
    total = 0
    something = False
    while True:
        p = p.lstrip(_WHITESPACE)
        if not p:
            if not something:
                raise Invalid("empty time span")
            return total
        m = _TIME_NUMBER.match(p)
        if not m:
            raise Invalid("not a time span such as '5min 3s'")
        whole, frac = m.group(1), m.group(2)
        rest = p[m.end() :]
        stripped = rest.lstrip(_WHITESPACE)
        multiplier = default_unit
        for suffix, factor in units:
            if stripped.startswith(suffix):
                multiplier = factor
                rest = stripped[len(suffix) :]
                break
        else:
            if rest and rest[0] not in _WHITESPACE:
                raise Invalid("unknown time unit")
        total += int(whole) * multiplier
        if frac is not None:
            if not frac:
                raise Invalid("a fraction needs digits after the dot")
            m_ = multiplier // 10
            for digit in frac:
                total += int(digit) * m_
                m_ //= 10
        if total >= INFINITY:
            raise Invalid("too long (use 'infinity')")
        something = True
        p = rest


_NSEC_UNITS: tuple[tuple[str, int], ...] = (
    *tuple((suffix, factor * 1000) for suffix, factor in _TIME_UNITS if factor != 1),
    ("usec", 1000),
    ("us", 1000),
    ("μs", 1000),
    ("µs", 1000),
    ("nsec", 1),
    ("ns", 1),
)


def format_timespan(usec: int) -> str:
    """A span in microseconds as systemd spells it: ``303000000`` → ``"5min 3s"``."""
    if usec == INFINITY:
        return "infinity"
    if usec == 0:
        return "0"
    parts = []
    for suffix, factor in (
        ("d", USEC_PER_DAY),
        ("h", USEC_PER_HOUR),
        ("min", USEC_PER_MINUTE),
        ("s", USEC_PER_SEC),
        ("ms", USEC_PER_MSEC),
        ("us", 1),
    ):
        n, usec = divmod(usec, factor)
        if n:
            parts.append(f"{n}{suffix}")
    return " ".join(parts)


def format_nsec(nsec: int) -> str:
    """A span in nanoseconds, spelled so ``parse_timespan(..., nanoseconds=True)`` reads it back."""
    if nsec == INFINITY:
        return "infinity"
    usec, rest = divmod(nsec, 1000)
    if rest:
        return f"{nsec}ns"
    return format_timespan(usec)


# -- words and lists ------------------------------------------------------------------------

_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_C_ESCAPES |= {"\\": "\\", '"': '"', "'": "'", "s": " "}


def split_words(
    text: str, *, cunescape: bool = False, separators: str = _WHITESPACE
) -> tuple[str, ...]:
    """Split like systemd's ``extract_first_word(..., EXTRACT_UNQUOTE[|EXTRACT_CUNESCAPE])``.

    Words are separated by whitespace; single and double quotes group; a
    backslash escapes the next character (with ``cunescape``, C escapes such as
    ``\\n`` and ``\\x41`` are decoded).
    """
    words: list[str] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in separators:
            i += 1
        if i >= n:
            return tuple(words)
        word: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\":
                if i + 1 >= n:
                    raise Invalid("trailing backslash")
                decoded, i = _unescape(text, i + 1, cunescape)
                word.append(decoded)
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word.append(c)
            elif c in "'\"":
                quote = c
            elif c in separators:
                break
            else:
                word.append(c)
            i += 1
        if quote:
            raise Invalid("unbalanced quotes")
        words.append("".join(word))


def _unescape(text: str, i: int, cunescape: bool) -> tuple[str, int]:
    c = text[i]
    if not cunescape:
        return c, i + 1
    if c in _C_ESCAPES:
        return _C_ESCAPES[c], i + 1
    if c == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
        return chr(int(text[i + 1 : i + 3], 16)), i + 3
    if c in "01234567" and re.fullmatch(r"[0-7]{3}", text[i : i + 3]):
        return chr(int(text[i : i + 3], 8)), i + 3
    if c == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 1 : i + 5]):
        return chr(int(text[i + 1 : i + 5], 16)), i + 5
    raise Invalid(f"unknown escape \\{c}")


_NEEDS_QUOTING = re.compile(r"[\s'\"\\]")


def quote_word(word: str, *, cunescape: bool = False) -> str:
    """Quote one word so that :func:`split_words` returns it unchanged."""
    if word and not _NEEDS_QUOTING.search(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    if cunescape:
        escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def join_words(words: Iterable[str], *, cunescape: bool = False) -> str:
    """The inverse of :func:`split_words`."""
    return " ".join(quote_word(w, cunescape=cunescape) for w in words)


def parse_words(value: object, *, cunescape: bool = False) -> tuple[str, ...]:
    """A list of words: a string split as systemd does, or any iterable of strings and paths."""
    if isinstance(value, str):
        return split_words(value, cunescape=cunescape)
    if isinstance(value, os.PathLike):
        return (str(os.fspath(value)),)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        items: list[str] = []
        for item in value:
            if isinstance(item, os.PathLike):
                items.append(str(os.fspath(item)))
            elif isinstance(item, str):
                items.append(item)
            else:
                raise Invalid(f"list items must be strings, got {type(item).__name__}")
        return tuple(items)
    raise Invalid(f"expected a string or a list of strings, got {type(value).__name__}")


def parse_string(value: object) -> str:
    """A string; a :class:`os.PathLike` becomes its path, an int its decimal spelling."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Invalid(f"expected a string, got {type(value).__name__}")


def parse_signal(value: object) -> int:
    """A signal: :class:`signal.Signals`, a number, ``"SIGTERM"``, ``"TERM"`` or ``"RTMIN+3"``."""
    if isinstance(value, bool):
        raise Invalid("a boolean is not a signal")
    if isinstance(value, int):
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        number = _signal_number(text)
    else:
        raise Invalid(f"expected a signal name or number, got {type(value).__name__}")
    if not 1 <= number <= signal.SIGRTMAX:
        raise Invalid("not a valid signal number")
    return number


def _signal_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.removeprefix("SIG")
    if m := re.fullmatch(r"RTMIN\+([0-9]+)", name):
        return int(signal.SIGRTMIN) + int(m.group(1))
    if m := re.fullmatch(r"RTMAX-([0-9]+)", name):
        return int(signal.SIGRTMAX) - int(m.group(1))
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        raise Invalid("unknown signal name") from None


def format_signal(number: int) -> str:
    """``15`` → ``"SIGTERM"``; real-time signals as ``"SIGRTMIN+n"``."""
    rtmin = int(signal.SIGRTMIN)
    if rtmin < number <= int(signal.SIGRTMAX):
        return f"SIGRTMIN+{number - rtmin}"
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


# -- CPU and NUMA sets ----------------------------------------------------------------------


def parse_cpu_set(value: object) -> tuple[int, ...]:
    """CPU (or NUMA node) numbers: ``"0-3 8"``, ``"0,1"``, or ints; sorted and unique."""
    cpus: set[int] = set()
    if isinstance(value, str):
        for word in re.split(r"[\s,]+", value.strip()):
            if not word:
                continue
            m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", word)
            if not m:
                raise Invalid(f"bad CPU range {word!r}")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo or hi >= 8192:
                raise Invalid(f"bad CPU range {word!r}")
            cpus.update(range(lo, hi + 1))
    elif isinstance(value, Iterable):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < 8192:
                raise Invalid("CPU numbers are ints from 0 to 8191")
            cpus.add(item)
    else:
        raise Invalid(f"expected a CPU list, got {type(value).__name__}")
    return tuple(sorted(cpus))


def format_cpu_set(cpus: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` → ``"0-2 5"``."""
    ranges: list[str] = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        ranges.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return " ".join(ranges)


def cpu_set_to_bytes(cpus: tuple[int, ...]) -> bytes:
    """The bit mask systemd's ``cpu_set_to_dbus()`` sends: bit n of byte n//8 for CPU n."""
    if not cpus:
        return b""
    # systemd allocates whole CPU_ALLOC units of 8 bytes.
    size = (max(cpus) // 64 + 1) * 8
    mask = bytearray(size)
    for cpu in cpus:
        mask[cpu // 8] |= 1 << (cpu % 8)
    return bytes(mask)
