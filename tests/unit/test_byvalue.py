"""By-value functions with the standard library's pickle, their digests and change detection."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from sandboxed.wire import byvalue, serial

# A stand-in worker: a fresh interpreter with our sys.path, not our __main__ (and no dill).
LOADER = r"""
import sys
from sandboxed.wire import serial
fn = serial.loads_function(sys.stdin.buffer.read())
print(repr(fn(*eval(sys.argv[1]))), "dill" in sys.modules)
"""


def run_fresh(stream: bytes, *args: object) -> tuple[str, bool]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, repr(args)],
        input=stream,
        capture_output=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    value, dill = proc.stdout.decode().rsplit(" ", 1)
    return value, dill.strip() == "True"


MAIN_SOURCE = """
import math

SCALE = 3
STATE = {}

def helper(x):
    return math.floor(x) * SCALE

def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)

def compute(x):
    STATE["calls"] = STATE.get("calls", 0) + 1
    return helper(x) + fact(4), STATE["calls"]

def make_counter():
    count = 0
    def bump():
        nonlocal count
        count += 1
        return count
    return bump

class Thing:
    pass

def uses_class():
    return Thing
"""


@pytest.fixture
def main_ns() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(MAIN_SOURCE, "<the caller's __main__>", "exec"), namespace)
    return namespace


def test_a_main_function_loads_in_a_fresh_interpreter_without_dill(main_ns: dict[str, Any]) -> None:
    shipped = serial.by_value_function(main_ns["compute"])
    assert shipped is not None
    assert shipped.stream[:1] == b"P"
    assert run_fresh(shipped.stream, 2.5) == ("(30, 1)", False)


def test_a_lambda_and_a_closure_travel_by_value_without_dill() -> None:
    offset = 100

    def closure(x: int) -> int:
        return x + offset

    for fn, arg, expected in ((lambda x: x * 2, 4, "8"), (closure, 4, "104")):
        shipped = serial.by_value_function(fn)
        assert shipped is not None
        assert run_fresh(shipped.stream, arg) == (expected, False)


def test_globals_live_with_the_loaded_function_between_calls(main_ns: dict[str, Any]) -> None:
    shipped = serial.by_value_function(main_ns["compute"])
    assert shipped is not None
    fn = serial.loads_function(shipped.stream)
    assert fn(1) == (3 + 24, 1)
    assert fn(1) == (3 + 24, 2)
    assert main_ns["STATE"] == {}  # the caller's own global is untouched


def test_a_helper_and_its_caller_share_one_namespace_and_recursion_works(
    main_ns: dict[str, Any],
) -> None:
    fn = serial.loads_function(serial.by_value_function(main_ns["compute"]).stream)  # type: ignore[union-attr]
    assert fn.__globals__ is fn.__globals__["helper"].__globals__
    assert fn.__globals__["fact"](5) == 120
    assert fn.__name__ == "compute" and fn.__module__ == "__main__"


def test_closure_cells_keep_their_state_and_sharing() -> None:
    bump = serial.loads_function(serial.by_value_function(_counter()).stream)  # type: ignore[union-attr]
    assert [bump(), bump()] == [6, 7]


def _counter() -> Callable[[], int]:
    count = 5

    def bump() -> int:
        nonlocal count
        count += 1
        return count

    return bump


def test_only_the_globals_the_code_names_travel(main_ns: dict[str, Any]) -> None:
    main_ns["UNUSED"] = b"x" * 1_000_000
    shipped = serial.by_value_function(main_ns["helper"])
    assert shipped is not None
    assert len(shipped.stream) < 10_000
    assert "UNUSED" not in serial.loads_function(shipped.stream).__globals__


def test_the_same_unchanged_function_is_not_pickled_again(main_ns: dict[str, Any]) -> None:
    first = serial.by_value_function(main_ns["compute"])
    again = serial.by_value_function(main_ns["compute"])
    assert first is again


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda ns: ns.__setitem__("SCALE", 4), id="global-rebound"),
        pytest.param(lambda ns: ns.__setitem__("helper", lambda x: -x), id="helper-redefined"),
        pytest.param(
            lambda ns: setattr(ns["compute"], "__code__", (lambda x: x).__code__), id="new-code"
        ),
        pytest.param(lambda ns: setattr(ns["compute"], "__defaults__", (1,)), id="new-defaults"),
        pytest.param(lambda ns: setattr(ns["compute"], "tag", 1), id="new-attribute"),
        pytest.param(lambda ns: ns.__setitem__("math", os), id="module-rebound"),
    ],
)
def test_a_change_gives_a_new_stream_and_digest(
    main_ns: dict[str, Any], change: Callable[[dict[str, Any]], None]
) -> None:
    first = serial.by_value_function(main_ns["compute"])
    assert first is not None
    change(main_ns)
    second = serial.by_value_function(main_ns["compute"])
    assert second is not None and second is not first
    assert second.digest != first.digest


def test_a_rebound_closure_cell_is_noticed() -> None:
    bump = _counter()
    first = serial.by_value_function(bump)
    bump()
    second = serial.by_value_function(bump)
    assert first is not None and second is not None
    assert second.digest != first.digest


def test_same_code_with_other_closed_over_values_has_another_digest() -> None:
    def make(value: object) -> Callable[[], object]:
        return lambda: value

    one, two = serial.by_value_function(make(1)), serial.by_value_function(make(2))
    assert one is not None and two is not None
    assert one.digest != two.digest
    assert serial.loads_function(one.stream)() == 1
    assert serial.loads_function(two.stream)() == 2


def test_the_digest_is_the_sha256_of_the_whole_stream(main_ns: dict[str, Any]) -> None:
    import hashlib

    shipped = serial.by_value_function(main_ns["compute"])
    assert shipped is not None
    assert shipped.digest == hashlib.sha256(shipped.stream).digest()


def test_importable_functions_and_other_callables_are_not_by_value() -> None:
    assert serial.by_value_function(os.path.join) is None
    assert serial.by_value_function(run_fresh) is None
    assert serial.by_value_function(len) is None
    assert serial.by_value_function(pickle.Pickler) is None


def test_a_main_class_among_the_globals_falls_back_to_dill(main_ns: dict[str, Any]) -> None:
    shipped = serial.by_value_function(main_ns["uses_class"])
    assert shipped is not None
    assert shipped.stream[:1] == b"D"
    assert serial.loads_function(shipped.stream)().__name__ == "Thing"


def test_snapshots_notice_rebinding_not_mutation_in_place(main_ns: dict[str, Any]) -> None:
    # As with ProcessPoolExecutor, what a worker received is a snapshot: a global changed
    # in place is not shipped again (documented); rebinding it is.
    first = serial.by_value_function(main_ns["compute"])
    main_ns["STATE"]["seen"] = True
    assert serial.by_value_function(main_ns["compute"]) is first
    main_ns["STATE"] = {}
    assert serial.by_value_function(main_ns["compute"]) is not first


def test_a_call_stream_can_refer_to_a_function_shipped_apart(main_ns: dict[str, Any]) -> None:
    shipped = serial.by_value_function(main_ns["compute"])
    assert shipped is not None
    parts = serial.dumps_call(main_ns["compute"], (2.5,), {}, by_value=shipped)
    assert shipped.stream not in bytes(parts[0])
    fn = serial.loads_function(shipped.stream)
    got, args, kwargs = serial.loads_call(parts[0], parts[1:], fn=fn)
    assert got is fn and args == (2.5,) and kwargs == {}


def test_a_call_stream_without_its_function_is_refused_on_its_own(
    main_ns: dict[str, Any],
) -> None:
    shipped = serial.by_value_function(main_ns["compute"])
    parts = serial.dumps_call(main_ns["compute"], (1,), {}, by_value=shipped)
    with pytest.raises(serial.SerializationError):
        serial.loads_call(parts[0], parts[1:])


def test_by_value_functions_in_arguments_use_the_standard_library_too() -> None:
    def inner(x: int) -> int:
        return x + 1

    parts = serial.dumps_call(map, (inner, [1, 2]), {})
    assert bytes(parts[0][:1]) == b"P"
    fn, args, kwargs = serial.loads_call(parts[0], parts[1:])
    assert list(fn(*args, **kwargs)) == [2, 3]


def test_global_names_see_nested_code_and_skip_attributes() -> None:
    source = "def f():\n    g = [len(x.ATTR) for x in ITEMS]\n    return lambda: OTHER\n"
    ns: dict[str, Any] = {}
    exec(source, ns)
    names = byvalue.global_names(ns["f"].__code__)
    assert set(names) == {"len", "ITEMS", "OTHER"}
