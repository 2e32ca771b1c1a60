"""The value parsers read systemd's spellings and Python values into one normal form."""

from __future__ import annotations

import datetime
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxed.directives.values import (
    INFINITY,
    Invalid,
    Percent,
    format_cpu_set,
    format_size,
    format_timespan,
    join_words,
    parse_boolean,
    parse_cpu_set,
    parse_mode,
    parse_percent,
    parse_signal,
    parse_size,
    parse_timespan,
    parse_words,
    split_words,
)

# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "base", "expected"),
    [
        ("512M", 1024, 512 * 2**20),
        ("1K", 1024, 1024),
        ("1K", 1000, 1000),
        ("1.5G", 1024, 3 * 2**29),
        ("1G 512M", 1024, 2**30 + 2**29),
        ("10", 1024, 10),
        ("10B", 1024, 10),
        (" 7 K", 1024, 7 * 1024),
        ("infinity", 1024, INFINITY),
        ("2E", 1024, 2 * 2**60),
        (512 * 2**20, 1024, 512 * 2**20),
        (0, 1024, 0),
    ],
    ids=lambda v: repr(v),
)
def test_parse_size_reads_systemd_and_python_sizes(
    given_: object, base: int, expected: int
) -> None:
    assert parse_size(given_, base) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "lots", "-1", "1X", "1K 1M", "1.5.5G", True, 1.5, -3, 2**64, None, ["1"]],
    ids=repr,
)
def test_parse_size_refuses_non_sizes(bad: object) -> None:
    with pytest.raises(Invalid):
        parse_size(bad)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_parse_size_is_idempotent_and_format_round_trips(n: int) -> None:
    assert parse_size(parse_size(n)) == parse_size(n)
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=2**30), st.sampled_from(["", "K", "M", "G"]))
def test_parse_size_of_text_is_idempotent(n: int, suffix: str) -> None:
    once = parse_size(f"{n}{suffix}")
    assert parse_size(once) == once


# -- time spans -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "usec"),
    [
        ("5min 3s", 303_000_000),
        ("5min3s", 303_000_000),
        ("90", 90_000_000),
        ("1.5h", 5_400_000_000),
        ("200ms", 200_000),
        ("1d 2h", 93_600_000_000),
        ("2 weeks", 1_209_600_000_000),
        ("3us", 3),
        ("0", 0),
        ("infinity", INFINITY),
        (90, 90_000_000),
        (2.5, 2_500_000),
        (float("inf"), INFINITY),
        (datetime.timedelta(minutes=5, seconds=3), 303_000_000),
        (datetime.timedelta.max, INFINITY),
    ],
    ids=repr,
)
def test_parse_timespan_reads_systemd_and_python_spans(given_: object, usec: int) -> None:
    assert parse_timespan(given_) == usec


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "soon",
        "-5s",
        "5 parsecs",
        "3.s",
        "infinity and beyond",
        True,
        -1,
        float("nan"),
        datetime.timedelta(seconds=-1),
        None,
    ],
    ids=repr,
)
def test_parse_timespan_refuses_non_spans(bad: object) -> None:
    with pytest.raises(Invalid):
        parse_timespan(bad)


def test_parse_timespan_in_nanoseconds_uses_nanosecond_units() -> None:
    assert parse_timespan("50us", default_unit=1, nanoseconds=True) == 50_000
    assert parse_timespan("100", default_unit=1, nanoseconds=True) == 100


@given(st.integers(min_value=0, max_value=2**63))
def test_timespan_format_round_trips(usec: int) -> None:
    text = format_timespan(usec)
    assert parse_timespan(text) == usec
    assert parse_timespan(format_timespan(parse_timespan(text))) == usec


@given(st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=10**6)))
def test_timedelta_spans_are_exact(span: datetime.timedelta) -> None:
    usec = parse_timespan(span)
    assert usec == span // datetime.timedelta(microseconds=1)


# -- percentages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "permyriad"),
    [
        ("20%", 2000),
        ("12.5%", 1250),
        ("12.34%", 1234),
        ("5‰", 50),
        ("3‱", 3),
        (0.2, 2000),
        (1.0, 10000),
        (Percent(42), 42),
    ],
    ids=repr,
)
def test_parse_percent_reads_percent_permille_permyriad_and_fractions(
    given_: object, permyriad: int
) -> None:
    assert parse_percent(given_) == Percent(permyriad)


@pytest.mark.parametrize(
    "bad", ["20", "%", "1.234%", "-5%", "abc%", True, -0.1, float("nan"), 20], ids=repr
)
def test_parse_percent_refuses_non_percentages(bad: object) -> None:
    with pytest.raises(Invalid):
        parse_percent(bad)


def test_bounded_percent_refuses_more_than_100() -> None:
    with pytest.raises(Invalid, match="100%"):
        parse_percent("150%")
    assert parse_percent("150%", bounded=False) == Percent(15000)


@given(st.integers(min_value=0, max_value=1_000_000))
def test_percent_text_round_trips(permyriad: int) -> None:
    p = Percent(permyriad)
    assert parse_percent(str(p), bounded=False) == p
    assert parse_percent(parse_percent(str(p), bounded=False), bounded=False) == p


@given(st.floats(min_value=0, max_value=100, allow_nan=False))
def test_a_fraction_and_its_percent_text_agree(fraction: float) -> None:
    p = parse_percent(fraction, bounded=False)
    assert parse_percent(str(p), bounded=False) == p
    assert hash(parse_percent(str(p), bounded=False)) == hash(p)


def test_scale32_is_systemds_rounding() -> None:
    assert Percent(5000).scale32() == 2147483648
    assert Percent(10000).scale32() == 2**32 - 1
    assert Percent(0).scale32() == 0


# -- booleans, modes, signals, CPU sets -----------------------------------------------------


@pytest.mark.parametrize("word", ["1", "yes", "Y", "TRUE", "t", "on", True, 1], ids=repr)
def test_true_spellings(word: object) -> None:
    assert parse_boolean(word) is True


@pytest.mark.parametrize("word", ["0", "no", "N", "false", "F", "off", False, 0], ids=repr)
def test_false_spellings(word: object) -> None:
    assert parse_boolean(word) is False


@pytest.mark.parametrize("bad", ["", "maybe", 2, None, "yess"], ids=repr)
def test_not_booleans(bad: object) -> None:
    with pytest.raises(Invalid):
        parse_boolean(bad)


@pytest.mark.parametrize(
    ("given_", "mode"), [("0077", 0o77), ("027", 0o27), (0o755, 0o755)], ids=repr
)
def test_parse_mode(given_: object, mode: int) -> None:
    assert parse_mode(given_) == mode


@pytest.mark.parametrize("bad", ["0888", "rwx", 0o10000, -1, True], ids=repr)
def test_parse_mode_refuses(bad: object) -> None:
    with pytest.raises(Invalid):
        parse_mode(bad)


@pytest.mark.parametrize(
    ("given_", "number"),
    [
        ("SIGTERM", 15),
        ("TERM", 15),
        ("9", 9),
        (signal.SIGINT, 2),
        (10, 10),
        ("SIGRTMIN+3", int(signal.SIGRTMIN) + 3),
        ("RTMAX-1", int(signal.SIGRTMAX) - 1),
    ],
    ids=repr,
)
def test_parse_signal(given_: object, number: int) -> None:
    assert parse_signal(given_) == number


@pytest.mark.parametrize("bad", ["SIGFOO", "0", 0, 200, True, ""], ids=repr)
def test_parse_signal_refuses(bad: object) -> None:
    with pytest.raises(Invalid):
        parse_signal(bad)


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_cpu_sets_round_trip(cpus: set[int]) -> None:
    normal = parse_cpu_set(sorted(cpus))
    assert parse_cpu_set(format_cpu_set(normal)) == normal
    assert parse_cpu_set(normal) == normal


# -- words and lists ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ("a", "b", "c")),
        ('"a b" c', ("a b", "c")),
        ("'a b' \"c d\"", ("a b", "c d")),
        ("a\\ b", ("a b",)),
        ("", ()),
        ("  ", ()),
    ],
    ids=repr,
)
def test_split_words_unquotes_like_systemd(text: str, words: tuple[str, ...]) -> None:
    assert split_words(text) == words


def test_split_words_decodes_c_escapes_when_asked() -> None:
    assert split_words("A=\\t B=\\x41", cunescape=True) == ("A=\t", "B=A")


@pytest.mark.parametrize("bad", ['"open', "trail\\"], ids=repr)
def test_split_words_refuses_broken_quoting(bad: str) -> None:
    with pytest.raises(Invalid):
        split_words(bad)


_WORD = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1)


@given(st.lists(_WORD, max_size=6))
def test_join_then_split_round_trips_and_is_idempotent(words: list[str]) -> None:
    once = parse_words(words)
    assert split_words(join_words(once)) == once
    assert parse_words(once) == once
