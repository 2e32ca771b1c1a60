"""The safe codec's memory budget: a decoded value never takes more than its budget.

A hostile sandbox writes the stream, so the decoder bounds what it builds: at most
``AMPLIFICATION`` times the bytes received (plus ``BUDGET_SLACK``), or the caller's
``max_size``. The fuzz tests mutate valid streams (hypothesis, a bounded number of
examples, so that they run in the suite) and check, for every input, that decoding
either refuses it with ``UnsafeResultError`` or returns a value whose objects take
no more memory than the budget.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxed._errors import UnsafeResultError
from sandboxed.wire.codec import AMPLIFICATION, BUDGET_SLACK, MAGIC, budget, decode, encode


def real_size(value: object) -> int:
    """The memory of every distinct object of ``value`` (sys.getsizeof, each object once)."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if type(obj) is dict:
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif type(obj) in (list, tuple, set, frozenset):
            stack.extend(obj)  # type: ignore[call-overload]
    return total


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decoded_within_budget(data: bytes, max_size: int | None = None) -> object:
    """Decode; a value that comes back must fit its budget. Returns it (or None if refused)."""
    try:
        value = decode(data, max_size=max_size)
    except UnsafeResultError:
        return None
    allowed, _why = budget(len(data), max_size)
    assert real_size(value) <= allowed, (len(data), real_size(value), allowed)
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
plain = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=6),
        st.frozensets(st.integers(), max_size=6),
        st.sets(st.text(max_size=3), max_size=6),
    ),
    max_leaves=30,
)


@st.composite
def mutated(draw: Any) -> bytes:
    """A valid stream, then a few mutations: flips, insertions of tags, cut or doubled slices."""
    data = bytearray(encode(draw(plain)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "double", "count"]))
        at = draw(st.integers(len(MAGIC), max(len(MAGIC), len(data) - 1)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from([b"S\x00", b"d\x00", b"l\x00", b"Z\x00", b"N"]))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "double":
            piece = data[at : at + draw(st.integers(1, 16))]
            data[at:at] = piece * draw(st.integers(1, 50))
        else:
            data[at:at] = b"l" + uvarint(draw(st.integers(0, 1 << 20)))
    return bytes(data)


@given(mutated())
@settings(max_examples=1500, deadline=None)
def test_a_mutated_stream_is_refused_or_fits_its_budget(data: bytes) -> None:
    decoded_within_budget(data)


@given(mutated(), st.integers(1, 1 << 16))
@settings(max_examples=500, deadline=None)
def test_the_callers_max_size_bounds_every_decoded_value(data: bytes, max_size: int) -> None:
    decoded_within_budget(data, max_size)


@given(st.lists(st.sampled_from([b"S\x00", b"Z\x00", b"d\x00", b"l\x00", b"t\x00", b"N"])))
@settings(max_examples=300, deadline=None)
def test_empty_containers_cannot_amplify_past_the_budget(items: list[bytes]) -> None:
    # Many copies of each drawn item: the amplification attack of issue 14 and its kin.
    body = b"".join(items) * 2000
    n = len(items) * 2000
    decoded_within_budget(MAGIC + b"l" + uvarint(n) + body)


def test_a_list_of_empty_sets_is_refused_before_it_is_built() -> None:
    n = 400_000
    with pytest.raises(UnsafeResultError, match=r"budget \(64x the 800008 bytes"):
        decode(MAGIC + b"l" + uvarint(n) + b"S\x00" * n)


def test_ordinary_records_fit_the_proportional_budget() -> None:
    records = [{"id": i, "name": f"user-{i}", "score": i / 3, "tags": ["a"]} for i in range(5000)]
    assert decode(encode(records)) == records
    one_key = [{"a": 1}] * 10_000
    assert decode(encode(one_key)) == one_key


def test_the_budget_is_proportional_with_a_slack_and_capped_by_max_size() -> None:
    assert budget(1000) == (
        AMPLIFICATION * 1000 + BUDGET_SLACK,
        f"64x the 1000 bytes received + {BUDGET_SLACK}",
    )
    assert budget(1000, max_size=10) == (10, "max_decoded=10")
    assert budget(1000, max_size=1 << 40)[0] == AMPLIFICATION * 1000 + BUDGET_SLACK


def test_a_max_size_smaller_than_the_value_is_refused_naming_max_decoded() -> None:
    data = encode(list(range(10_000)))
    assert decode(data) == list(range(10_000))
    with pytest.raises(UnsafeResultError, match="max_decoded=4096"):
        decode(data, max_size=4096)


def test_out_of_band_bytes_count_as_received() -> None:
    big = b"x" * (1 << 20)
    assert decode(MAGIC + b"B\x00", [big], max_size=None) is big
    with pytest.raises(UnsafeResultError, match="max_decoded"):
        decode(MAGIC + b"B\x00", [big], max_size=1 << 10)
