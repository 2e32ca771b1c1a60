"""The safe plain-data codec: round trips, refusals, and hostile input."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import decimal
import enum
import math
import os
import pickle
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxed._errors import UnsafeResultError
from sandboxed.wire.codec import (
    MAGIC,
    MAX_DEPTH,
    MAX_HASH_COLLISIONS,
    decode,
    encode,
    encode_parts,
)


def roundtrip(value: object) -> object:
    return decode(encode(value))


def same(a: object, b: object) -> bool:
    """Equality that also holds for NaN, and checks types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


ROUND_TRIPS = [
    pytest.param(None, id="none"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="minus-one"),
    pytest.param(127, id="int-127"),
    pytest.param(128, id="int-128"),
    pytest.param(-129, id="int-minus-129"),
    pytest.param(2**64, id="int-2**64"),
    pytest.param(-(2**1000) + 7, id="int-huge-negative"),
    pytest.param(1.5, id="float"),
    pytest.param(-0.0, id="float-negative-zero"),
    pytest.param(float("inf"), id="float-inf"),
    pytest.param(float("nan"), id="float-nan"),
    pytest.param(complex(1, -2.5), id="complex"),
    pytest.param("", id="str-empty"),
    pytest.param("h\xe9llo \u2713 \U0001d518", id="str-unicode"),
    pytest.param("lone \udc80 surrogate", id="str-lone-surrogate"),
    pytest.param(b"", id="bytes-empty"),
    pytest.param(bytes(range(256)), id="bytes-all-values"),
    pytest.param([], id="list-empty"),
    pytest.param([1, "a", None], id="list"),
    pytest.param((), id="tuple-empty"),
    pytest.param((1, (2, (3,))), id="tuple-nested"),
    pytest.param({}, id="dict-empty"),
    pytest.param({"a": 1, 2: "b", (3, 4): [5], None: None, b"k": 1.5}, id="dict-mixed-keys"),
    pytest.param({frozenset({1}): {2: {3: 4}}}, id="dict-frozenset-key"),
    pytest.param({1, "a", (2, 3)}, id="set"),
    pytest.param(frozenset({1, frozenset({2})}), id="frozenset-nested"),
    pytest.param(decimal.Decimal("3.140"), id="decimal"),
    pytest.param(decimal.Decimal("-Infinity"), id="decimal-infinity"),
    pytest.param(decimal.Decimal("1E+999999"), id="decimal-large-exponent"),
    pytest.param(dt.date(1, 1, 1), id="date-min"),
    pytest.param(dt.date(2024, 2, 29), id="date"),
    pytest.param(dt.time(23, 59, 59, 999999), id="time"),
    pytest.param(
        dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))), id="time-tz"
    ),
    pytest.param(dt.datetime(2024, 1, 2, 3, 4, 5, 6), id="datetime-naive"),
    pytest.param(dt.datetime(2024, 11, 3, 1, 30, fold=1), id="datetime-fold"),
    pytest.param(dt.datetime(2024, 1, 2, tzinfo=dt.UTC), id="datetime-utc"),
    pytest.param(
        dt.datetime(2024, 1, 2, tzinfo=dt.timezone(-dt.timedelta(hours=3), "BRT")),
        id="datetime-named-offset",
    ),
    pytest.param(dt.timedelta(days=-3, seconds=5, microseconds=7), id="timedelta"),
    pytest.param(dt.timedelta.max, id="timedelta-max"),
]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_plain_values_round_trip_with_their_exact_types(value: object) -> None:
    assert same(roundtrip(value), value)


def test_timezone_names_and_utc_identity_survive() -> None:
    value = dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET"))
    back = roundtrip(value)
    assert isinstance(back, dt.datetime)
    assert back.tzname() == "CET"
    utc = roundtrip(dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    assert isinstance(utc, dt.datetime)
    assert utc.tzinfo is dt.UTC


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(bytearray(b"abc"), id="bytearray"),
        pytest.param(memoryview(b"abc"), id="memoryview"),
        pytest.param(memoryview(bytearray(b"abc")), id="memoryview-of-bytearray"),
    ],
)
def test_byte_buffers_come_back_as_bytes(value: Any) -> None:
    assert roundtrip(value) == b"abc"
    assert type(roundtrip(value)) is bytes


def test_a_multi_byte_memoryview_is_encoded_as_its_raw_bytes() -> None:
    import array

    arr = array.array("i", [1, 2, 3])
    assert roundtrip(memoryview(arr)) == arr.tobytes()


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False)
    | st.dates()
    | st.datetimes(timezones=st.none() | st.timezones().filter(lambda z: z is dt.UTC))
    | st.timedeltas(),
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.dictionaries(st.text() | st.integers() | st.tuples(st.integers()), children)
        | st.frozensets(st.integers() | st.text())
        | st.sets(st.binary())
    ),
    max_leaves=40,
)


@given(plain)
@settings(max_examples=300, deadline=None)
def test_nested_plain_data_round_trips(value: object) -> None:
    assert same(roundtrip(value), value)


@given(plain)
@settings(max_examples=100, deadline=None)
def test_encode_parts_with_everything_out_of_band_round_trips(value: object) -> None:
    parts = encode_parts(value, oob_threshold=0)
    assert same(decode(parts[0], parts[1:]), value)


def test_large_bytes_go_out_of_band_and_come_back_without_a_copy() -> None:
    big = os.urandom(1024) * (64 * 1024)  # 64 MiB
    parts = encode_parts({"blob": big, "small": b"x"})
    assert len(parts) == 2
    assert parts[1] is big
    assert len(parts[0]) < 100
    back = decode(parts[0], parts[1:])
    assert isinstance(back, dict)
    assert back["blob"] is big
    assert back["small"] == b"x"


def test_an_out_of_band_buffer_that_is_not_bytes_is_copied_into_bytes() -> None:
    parts = encode_parts([b"a" * 10, b"b" * 10], oob_threshold=5)
    back = decode(parts[0], [bytearray(p) for p in parts[1:]])
    assert back == [b"a" * 10, b"b" * 10]
    assert isinstance(back, list)
    assert all(type(b) is bytes for b in back)


def test_large_bytes_inline_round_trip() -> None:
    big = bytes(64 << 20)
    assert decode(encode(big)) == big


def test_the_stream_starts_with_magic_and_version() -> None:
    assert encode(None) == MAGIC + b"N"
    assert MAGIC == b"SBC\x01"


# -- refusals when encoding -------------------------------------------------------------------

Point = collections.namedtuple("Point", "x y")


class Colour(enum.IntEnum):
    RED = 1


class Custom:
    pass


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        pytest.param(object(), "result", "object", id="object"),
        pytest.param(Custom(), "result", "test_codec.Custom", id="instance"),
        pytest.param(Custom, "result", "type", id="class"),
        pytest.param(len, "result", "builtin_function_or_method", id="builtin-function"),
        pytest.param(lambda: 1, "result", "function", id="lambda"),
        pytest.param([1, 2, Point(1, 2)], "result[2]", "test_codec.Point", id="namedtuple"),
        pytest.param({"c": Colour.RED}, "result['c']", "test_codec.Colour", id="int-enum"),
        pytest.param([collections.OrderedDict()], "result[0]", "OrderedDict", id="ordered-dict"),
        pytest.param([1, 2, {"x": [object()]}], "result[2]['x'][0]", "object", id="deep-path"),
        pytest.param({Custom(): 1}, "result (key #0)", "Custom", id="dict-key"),
        pytest.param(
            {"s": frozenset({Point(1, 2)})}, "result['s'] (element #0)", "Point", id="set-element"
        ),
        pytest.param(
            dt.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC")),
            "result",
            "tzinfo of type ZoneInfo",
            id="zoneinfo",
        ),
        pytest.param(
            memoryview(bytes(8)).cast("B", (2, 4))[::-1], "result", "memoryview", id="strided"
        ),
    ],
)
def test_encode_refuses_what_is_not_plain_data_naming_type_and_path(
    value: object, path: str, type_name: str
) -> None:
    with pytest.raises(UnsafeResultError) as info:
        encode(value)
    message = str(info.value)
    assert message.startswith(f"{path} is ")
    assert type_name in message


def test_encode_names_the_root_it_is_given() -> None:
    with pytest.raises(UnsafeResultError, match=r"^args\[1\] is "):
        encode([1, object()], root="args")


def test_encode_refuses_a_reference_cycle() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(UnsafeResultError, match="nested deeper"):
        encode(loop)


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_limit_round_trips_and_one_more_is_refused() -> None:
    assert roundtrip(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(UnsafeResultError, match="nested deeper"):
        encode(nested(MAX_DEPTH + 1))


# -- hostile input when decoding --------------------------------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def intval(n: int) -> bytes:
    size = (n.bit_length() + 8) // 8 if n else 0
    return b"i" + uvarint(size) + n.to_bytes(size, "little", signed=True)


HOSTILE = [
    pytest.param(b"", "magic", id="empty"),
    pytest.param(b"SBC\x02N", "magic", id="wrong-version"),
    pytest.param(pickle.dumps([1, 2]), "magic", id="a-pickle"),
    pytest.param(MAGIC, "truncated", id="no-value"),
    pytest.param(MAGIC + b"?", "unknown tag", id="unknown-tag"),
    pytest.param(MAGIC + b"NN", "trailing", id="trailing-bytes"),
    pytest.param(MAGIC + b"b" + uvarint(2**40) + b"abc", "declared", id="huge-bytes-length"),
    pytest.param(MAGIC + b"s" + uvarint(2**63), "declared", id="huge-str-length"),
    pytest.param(MAGIC + b"i" + uvarint(10**6) + b"\x01", "declared", id="huge-int-length"),
    pytest.param(MAGIC + b"l" + uvarint(2**62) + b"N", "items declared", id="huge-list-count"),
    pytest.param(MAGIC + b"d" + uvarint(10**9), "items declared", id="huge-dict-count"),
    pytest.param(MAGIC + b"b" + b"\xff" * 11, "longer than 10", id="endless-varint"),
    pytest.param(MAGIC + b"b\x80", "truncated length", id="truncated-varint"),
    pytest.param(MAGIC + b"f\x00\x00", "truncated", id="truncated-float"),
    pytest.param(MAGIC + b"s\x02\xc3\x28", "UTF-8", id="invalid-utf8"),
    pytest.param(MAGIC + b"M\x03abc", "Decimal", id="invalid-decimal"),
    pytest.param(MAGIC + b"M\x02\xff\xfe", "Decimal", id="non-ascii-decimal"),
    pytest.param(MAGIC + b"D" + bytes([0xE8, 0x07, 13, 1]), "invalid date", id="month-13"),
    pytest.param(MAGIC + b"H" + bytes([25, 0, 0, 0, 0, 0, 0, 0]) + b"N", "time", id="hour-25"),
    pytest.param(MAGIC + b"H" + bytes(8) + b"q", "time zone tag", id="bad-tz-tag"),
    pytest.param(
        MAGIC + b"H" + bytes(8) + b"z" + (25 * 3600 * 10**6).to_bytes(8, "little") + b"N",
        "invalid",
        id="tz-offset-out-of-range",
    ),
    pytest.param(MAGIC + b"H" + bytes(8) + b"z" + bytes(8) + intval(1), "name", id="tz-name-int"),
    pytest.param(MAGIC + b"d\x01l\x00N", "unhashable", id="list-as-dict-key"),
    pytest.param(MAGIC + b"S\x01d\x00", "unhashable", id="dict-in-set"),
    pytest.param(MAGIC + b"d\x02" + intval(1) + b"N" + intval(1) + b"N", "duplicate", id="dup-key"),
    pytest.param(MAGIC + b"S\x02" + b"T" + intval(1), "duplicate", id="true-and-1-in-set"),
    pytest.param(MAGIC + b"B\x00", "0 given", id="out-of-band-missing"),
    pytest.param(MAGIC + b"l\x01" * 300 + b"N", "nested deeper", id="deep-lists"),
    pytest.param(MAGIC + b"d\x01N" * 300 + b"N", "nested deeper", id="deep-dicts"),
    pytest.param(MAGIC + b"t\x01" * 100_000 + b"N", "nested deeper", id="very-deep-tuples"),
]


@pytest.mark.parametrize(("data", "why"), HOSTILE)
def test_decode_rejects_hostile_input_cleanly(data: bytes, why: str) -> None:
    with pytest.raises(UnsafeResultError, match=why):
        decode(data)


def test_decode_rejects_every_truncation_of_a_valid_stream() -> None:
    value = {
        "a": [1, 2.5, "three", b"four", (None, True)],
        "b": {frozenset({1}), 7},
        "c": dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=1), "X")),
        "d": decimal.Decimal("1.5"),
    }
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(UnsafeResultError):
            decode(data[:cut])
    assert decode(data) == value


def test_decode_refuses_a_hash_flood_of_colliding_int_keys() -> None:
    modulus = 2**61 - 1  # hash(k * modulus) == 0 for every k
    count = MAX_HASH_COLLISIONS + 1
    body = b"".join(intval(k * modulus) + b"N" for k in range(count))
    with pytest.raises(UnsafeResultError, match="share one hash"):
        decode(MAGIC + b"d" + uvarint(count) + body)
    body = b"".join(intval(k * modulus) for k in range(count))
    with pytest.raises(UnsafeResultError, match="share one hash"):
        decode(MAGIC + b"S" + uvarint(count) + body)


def test_decode_accepts_a_few_colliding_keys() -> None:
    assert roundtrip({-1: "a", -2: "b"}) == {-1: "a", -2: "b"}  # hash(-1) == hash(-2)


def test_each_out_of_band_buffer_is_used_exactly_once() -> None:
    with pytest.raises(UnsafeResultError, match="used twice"):
        decode(MAGIC + b"l\x02B\x00B\x00", [b"x"])
    with pytest.raises(UnsafeResultError, match="not used"):
        decode(MAGIC + b"B\x00", [b"x", b"y"])


@given(st.binary(max_size=64))
@settings(max_examples=2000, deadline=None)
def test_decode_of_arbitrary_bytes_returns_or_raises_unsafe_result_error(junk: bytes) -> None:
    with contextlib.suppress(UnsafeResultError):
        decode(MAGIC + junk)


# -- no code execution -----------------------------------------------------------------------

MARKER_ENV = "SANDBOXED_TEST_MARKER"


class Evil:
    """Unpickling this writes a marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def test_an_object_with_reduce_is_refused_by_the_encoder(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(UnsafeResultError, match="Evil"):
        encode({"payload": Evil(marker)})
    assert not marker.exists()


def test_a_malicious_pickle_is_never_executed_by_decode(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = pickle.dumps(Evil(marker))
    pickle.loads(payload)  # the payload is real: plain unpickling runs it
    assert marker.read_text() == "pwned"
    marker.unlink()

    with pytest.raises(UnsafeResultError):
        decode(payload)
    with pytest.raises(UnsafeResultError):
        decode(MAGIC + payload)
    # smuggled as data, it stays data
    assert decode(encode({"blob": payload})) == {"blob": payload}
    parts = encode_parts([payload], oob_threshold=0)
    assert decode(parts[0], parts[1:]) == [payload]
    assert not marker.exists()
