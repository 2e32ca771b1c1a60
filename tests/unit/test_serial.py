"""Packaging of calls, results and exceptions across the sandbox boundary."""

from __future__ import annotations

import functools
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxed._errors import (
    RemoteError,
    RemoteTraceback,
    SerializationError,
    UnsafeResultError,
)
from sandboxed.wire import codec
from sandboxed.wire.serial import (
    OUT_OF_BAND_THRESHOLD,
    Buffer,
    dumps_call,
    dumps_exception,
    dumps_result,
    loads_call,
    loads_exception,
    loads_result,
)

# -- a stand-in worker: a fresh interpreter with our sys.path but not our __main__ ------------

WORKER = r"""
import struct, sys
from sandboxed.wire.serial import dumps_exception, dumps_result, loads_call

def read_parts(stream):
    (count,) = struct.unpack("<I", stream.read(4))
    sizes = struct.unpack(f"<{count}Q", stream.read(8 * count))
    return [stream.read(size) for size in sizes]

def write_parts(stream, kind, parts):
    views = [memoryview(p).cast("B") for p in parts]
    stream.write(kind + struct.pack(f"<I{len(views)}Q", len(views), *(v.nbytes for v in views)))
    for view in views:
        stream.write(view)

parts = read_parts(sys.stdin.buffer)
safe = sys.argv[1] == "safe"
fn, args, kwargs = loads_call(parts[0], parts[1:])
try:
    kind, parts = b"R", dumps_result(fn(*args, **kwargs), safe=safe)
except BaseException as exc:
    kind, parts = b"E", dumps_exception(exc, safe=safe)
write_parts(sys.stdout.buffer, kind, parts)
"""


def frame(parts: Sequence[Buffer]) -> bytes:
    views = [memoryview(p).cast("B") for p in parts]
    header = struct.pack(f"<I{len(views)}Q", len(views), *(v.nbytes for v in views))
    return header + b"".join(views)


def unframe(data: bytes) -> list[bytes]:
    (count,) = struct.unpack_from("<I", data)
    sizes = struct.unpack_from(f"<{count}Q", data, 4)
    pos = 4 + 8 * count
    parts = []
    for size in sizes:
        parts.append(data[pos : pos + size])
        pos += size
    return parts


def run_in_fresh_process(
    fn: Callable[..., object], *args: object, safe: bool = False, **kwargs: object
) -> tuple[str, Any]:
    """Call fn in a new interpreter as the worker would; return ("result"|"exception", value)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, "safe" if safe else "trusted"],
        input=frame(dumps_call(fn, args, kwargs)),
        capture_output=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    kind, parts = proc.stdout[:1], unframe(proc.stdout[1:])
    if kind == b"R":
        return "result", loads_result(parts[0], parts[1:], safe=safe)
    return "exception", loads_exception(parts[0], parts[1:], safe=safe)


def call_remote(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    kind, value = run_in_fresh_process(fn, *args, **kwargs)
    if kind == "exception":
        raise value
    return value


def roundtrip_call(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    parts = dumps_call(fn, args, kwargs)
    fn2, args2, kwargs2 = loads_call(parts[0], parts[1:])
    return fn2(*args2, **kwargs2)


# -- functions of every kind -----------------------------------------------------------------


def module_level(x: int, y: int = 1) -> int:
    return x * 10 + y


class Widget:
    factor = 3

    def __init__(self, base: int) -> None:
        self.base = base

    def method(self, x: int) -> int:
        return self.base + x

    @classmethod
    def klass(cls, x: int) -> int:
        return cls.factor * x

    @staticmethod
    def static(x: int) -> int:
        return x - 1


def make_closure(offset: int) -> Callable[[int], int]:
    def closure(x: int) -> int:
        return x + offset

    return closure


def make_nested_class_method() -> Callable[[int], int]:
    class Local:
        def double(self, x: int) -> int:
            return 2 * x

    return Local().double


FUNCTION_KINDS = [
    pytest.param(module_level, 4, 41, id="module-level"),
    pytest.param(functools.partial(module_level, y=7), 4, 47, id="partial"),
    pytest.param(abs, -4, 4, id="builtin"),
    pytest.param(make_closure(100), 4, 104, id="closure"),
    pytest.param(lambda x: x**2, 4, 16, id="lambda"),
    pytest.param(Widget(5).method, 4, 9, id="instance-method"),
    pytest.param(Widget.klass, 4, 12, id="classmethod"),
    pytest.param(Widget.static, 4, 3, id="staticmethod"),
    pytest.param(make_nested_class_method(), 4, 8, id="method-of-a-local-class"),
]


@pytest.mark.parametrize(("fn", "arg", "expected"), FUNCTION_KINDS)
def test_every_kind_of_function_runs_in_a_fresh_interpreter(
    fn: Callable[[int], int], arg: int, expected: int
) -> None:
    assert call_remote(fn, arg) == expected


@pytest.mark.parametrize(("fn", "arg", "expected"), FUNCTION_KINDS)
def test_every_kind_of_function_round_trips_in_process(
    fn: Callable[[int], int], arg: int, expected: int
) -> None:
    assert roundtrip_call(fn, arg) == expected


def test_module_level_functions_with_plain_arguments_use_the_c_pickler() -> None:
    assert bytes(dumps_call(module_level, (1,), {"y": 2})[0][:1]) == b"P"
    # Lambdas, closures and __main__ functions too: by value, with the standard library.
    assert bytes(dumps_call(lambda: 1, (), {})[0][:1]) == b"P"


MAIN_SOURCE = """
import math

SCALE = 3

def main_helper(x):
    return math.floor(x) * SCALE

def main_function(x):
    return main_helper(x) + 1

class MainThing:
    def __init__(self, value):
        self.value = value

def main_unwrap(thing):
    return thing.value * 2

class MainError(Exception):
    pass

def main_raises(message):
    raise MainError(message)
"""


@pytest.fixture
def main_namespace(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Code whose __module__ is '__main__', also reachable by name from the caller's __main__.

    That is the dangerous case: the C pickler would happily pickle it by reference,
    and the worker, whose __main__ is another module, could not load it.
    """
    main = sys.modules["__main__"]
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(MAIN_SOURCE, "<caller's __main__>", "exec"), namespace)
    for name, value in namespace.items():
        if not name.startswith("__"):
            monkeypatch.setattr(main, name, value, raising=False)
    return namespace


def test_a_main_function_travels_by_value_with_the_globals_it_uses(
    main_namespace: dict[str, Any],
) -> None:
    fn = main_namespace["main_function"]
    assert fn.__module__ == "__main__"
    assert bytes(dumps_call(fn, (2.5,), {})[0][:1]) == b"P"
    assert call_remote(fn, 2.5) == 7


def test_an_instance_of_a_main_class_travels_by_value(main_namespace: dict[str, Any]) -> None:
    thing = main_namespace["MainThing"](21)
    assert call_remote(main_namespace["main_unwrap"], thing) == 42


def test_a_main_exception_comes_back_as_the_callers_own_class(
    main_namespace: dict[str, Any],
) -> None:
    with pytest.raises(main_namespace["MainError"], match="boom") as info:
        call_remote(main_namespace["main_raises"], "boom")
    assert isinstance(info.value.__cause__, RemoteTraceback)


# -- arguments -------------------------------------------------------------------------------


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def test_arguments_and_keyword_arguments_round_trip() -> None:
    fn, args, kwargs = loads_call(*_split(dumps_call(echo, (1, "a", [None]), {"k": {2: 3}})))
    assert fn is echo
    assert args == (1, "a", [None])
    assert kwargs == {"k": {2: 3}}


def _split(parts: list[Buffer]) -> tuple[Buffer, list[Buffer]]:
    return parts[0], parts[1:]


@pytest.mark.parametrize(
    ("args", "kwargs", "which"),
    [
        pytest.param((1, socket.socket()), {}, "argument 1", id="positional"),
        pytest.param((1,), {"sock": socket.socket()}, "argument 'sock'", id="keyword"),
        pytest.param(((x for x in ()),), {}, "argument 0", id="generator"),
    ],
)
def test_an_unpicklable_argument_is_named(
    args: tuple[object, ...], kwargs: dict[str, object], which: str
) -> None:
    with pytest.raises(SerializationError) as info:
        dumps_call(echo, args, kwargs)
    assert info.value.which == which
    assert "socket" in info.value.reason or "generator" in info.value.reason
    assert str(info.value).startswith(f"cannot serialize the {which}: ")


def test_an_unpicklable_function_is_named() -> None:
    with pytest.raises(SerializationError) as info:
        dumps_call(socket.socket().close, (), {"x": socket.socket()})
    assert info.value.which == "function"


def test_a_stream_that_is_not_a_call_is_refused() -> None:
    with pytest.raises(SerializationError, match="does not hold"):
        loads_call(dumps_result([1, 2])[0])
    with pytest.raises(SerializationError, match="cannot be rebuilt"):
        loads_call(b"Pgarbage")
    with pytest.raises(SerializationError, match="unknown stream kind"):
        loads_call(b"X")


# -- results ---------------------------------------------------------------------------------

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(plain, st.booleans())
@settings(max_examples=200, deadline=None)
def test_plain_results_round_trip_in_both_modes(value: object, safe: bool) -> None:
    main, *buffers = dumps_result(value, safe=safe)
    assert loads_result(main, buffers, safe=safe) == value


def test_an_unpicklable_result_raises_serialization_error_naming_the_result() -> None:
    with pytest.raises(SerializationError) as info:
        dumps_result({"sock": socket.socket()})
    assert info.value.which == "result"


def test_a_result_that_cannot_be_rebuilt_raises_serialization_error() -> None:
    with pytest.raises(SerializationError) as info:
        loads_result(b"P\x80\x05garbage")
    assert info.value.which == "result"


def test_safe_mode_refuses_objects_and_names_where_they_are() -> None:
    with pytest.raises(UnsafeResultError, match=r"result\['w'\]"):
        dumps_result({"w": Widget(1)}, safe=True)


def test_results_needing_dill_round_trip() -> None:
    main, *buffers = dumps_result({"f": lambda x: x + 1})
    back = loads_result(main, buffers)
    assert isinstance(back, dict)
    assert back["f"](1) == 2


# -- large values ----------------------------------------------------------------------------

BIG = os.urandom(1 << 20) * 64  # 64 MiB


def test_large_bytes_arguments_travel_out_of_band_without_a_copy() -> None:
    parts = dumps_call(echo, (BIG,), {"again": BIG})
    assert len(parts) == 2  # the same object twice is sent once
    assert parts[1] is BIG
    assert len(parts[0]) < 1000
    _, args, kwargs = loads_call(parts[0], parts[1:])
    assert args[0] is BIG  # handed over as bytes: used as it is
    assert kwargs["again"] is BIG


def test_large_bytes_received_in_another_buffer_come_back_as_bytes() -> None:
    parts = dumps_result(BIG)
    back = loads_result(parts[0], [bytearray(parts[1])])
    assert type(back) is bytes
    assert back == BIG


def test_bytearray_and_numpy_buffers_are_out_of_band_and_interleave_with_bytes() -> None:
    first = bytearray(b"a" * OUT_OF_BAND_THRESHOLD)
    array = np.arange(1 << 16, dtype=np.float64)
    value = [first, BIG, array, b"small", BIG, first]
    parts = dumps_result(value)
    assert len(parts) == 4
    assert parts[1] is first
    assert parts[2] is BIG
    received = [bytearray(p) for p in parts[1:]]
    back = loads_result(parts[0], received)
    assert isinstance(back, list)
    assert back[0] is received[0]  # a bytearray is handed over, not copied
    assert back[0] is back[5]
    assert back[1] == BIG
    assert type(back[1]) is bytes
    assert back[1] is back[4]
    assert np.array_equal(back[2], array)
    assert np.shares_memory(back[2], np.frombuffer(received[2], dtype=np.uint8))
    assert back[3] == b"small"


def test_large_bytes_travel_out_of_band_on_the_dill_path_too() -> None:
    class Local:  # a class the worker cannot import: only dill takes it
        pass

    parts = dumps_result((Local, BIG))
    assert bytes(parts[0][:1]) == b"D"
    assert parts[1] is BIG
    back = loads_result(parts[0], parts[1:])
    assert isinstance(back, tuple)
    assert back[1] is BIG


def test_large_bytes_travel_out_of_band_in_safe_mode() -> None:
    parts = dumps_result({"blob": BIG}, safe=True)
    assert parts[1] is BIG
    assert loads_result(parts[0], parts[1:], safe=True) == {"blob": BIG}


def test_a_large_bytes_argument_reaches_a_fresh_interpreter_intact() -> None:
    data = BIG[: 8 << 20]
    assert call_remote(len, data) == len(data)


# -- exceptions ------------------------------------------------------------------------------


class CustomError(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message, code)
        self.code = code


class BadInitError(Exception):
    """Its args do not fit its __init__: unpickling it fails."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


class Vanishing(Exception):
    pass


def raise_(exc: BaseException) -> None:
    raise exc


def raise_chained() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError("while looking up") from exc


def raise_bad_init() -> None:
    raise BadInitError("x", "y")


def raise_with_generator() -> None:
    exc = ValueError("holds a generator")
    exc.gen = (x for x in ())  # type: ignore[attr-defined]
    raise exc


def test_a_builtin_exception_comes_back_as_itself_with_the_remote_traceback_as_cause() -> None:
    with pytest.raises(ZeroDivisionError, match="by zero") as info:
        call_remote(divmod, 1, 0)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "ZeroDivisionError: integer division or modulo by zero" in cause.tb
    assert "Traceback (most recent call last)" in cause.tb


def test_a_custom_exception_keeps_its_attributes_and_notes() -> None:
    exc = CustomError("bad", code=7)
    exc.add_note("a note")
    with pytest.raises(CustomError) as info:
        call_remote(raise_, exc)
    assert info.value.code == 7
    assert info.value.args == ("bad", 7)
    assert info.value.__notes__ == ["a note"]


def test_the_remote_traceback_shows_the_whole_remote_chain() -> None:
    with pytest.raises(ValueError, match="while looking up") as info:
        call_remote(raise_chained)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    tb = info.value.__cause__.tb
    assert "KeyError: 'missing'" in tb
    assert "direct cause" in tb
    assert "raise_chained" in tb


def test_an_exception_group_comes_back_as_itself() -> None:
    group = ExceptionGroup("several", [ValueError("a"), CustomError("b", 2)])
    with pytest.raises(ExceptionGroup) as info:
        call_remote(raise_, group)
    assert [type(e) for e in info.value.exceptions] == [ValueError, CustomError]


@pytest.mark.parametrize(
    ("fn", "args", "type_name", "message"),
    [
        pytest.param(raise_bad_init, (), "test_serial.BadInitError", "x/y", id="init"),
        pytest.param(
            raise_with_generator, (), "ValueError", "holds a generator", id="unpicklable-attribute"
        ),
    ],
)
def test_an_exception_that_cannot_be_rebuilt_comes_back_as_remote_error(
    fn: Callable[..., None], args: tuple[object, ...], type_name: str, message: str
) -> None:
    kind, error = run_in_fresh_process(fn, *args)
    assert kind == "exception"
    assert type(error) is RemoteError
    assert error.type_name == type_name
    assert error.message == message
    assert f"{type_name}: {message}" in error.remote_traceback
    assert isinstance(error.__cause__, RemoteTraceback)


def test_an_exception_whose_class_is_gone_in_the_caller_comes_back_as_remote_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main, *buffers = dumps_exception(Vanishing("here today"))
    monkeypatch.delattr(sys.modules[__name__], "Vanishing")
    error = loads_exception(main, buffers)
    assert type(error) is RemoteError
    assert error.type_name == "test_serial.Vanishing"
    assert error.message == "here today"


@pytest.mark.parametrize(
    ("exc", "type_name", "message"),
    [
        pytest.param(SystemExit(3), "SystemExit", "3", id="sys-exit-3"),
        pytest.param(SystemExit(), "SystemExit", "", id="sys-exit"),
        pytest.param(SystemExit("bye"), "SystemExit", "bye", id="sys-exit-message"),
        pytest.param(KeyboardInterrupt(), "KeyboardInterrupt", "", id="keyboard-interrupt"),
        pytest.param(GeneratorExit(), "GeneratorExit", "", id="generator-exit"),
    ],
)
def test_exits_and_interrupts_come_back_as_remote_errors_that_do_not_stop_the_caller(
    exc: BaseException, type_name: str, message: str
) -> None:
    kind, error = run_in_fresh_process(raise_, exc)
    assert kind == "exception"
    assert type(error) is RemoteError
    assert isinstance(error, Exception)
    assert (error.type_name, error.message) == (type_name, message)


def test_sys_exit_called_in_the_worker_comes_back_as_remote_error() -> None:
    kind, error = run_in_fresh_process(sys.exit, 4)
    assert (kind, type(error), error.message) == ("exception", RemoteError, "4")


def test_dumps_exception_never_raises_even_for_an_unprintable_exception() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    main, *buffers = dumps_exception(Unprintable())
    envelope = codec.decode(main, buffers)
    assert isinstance(envelope, tuple)
    assert envelope[1] == "<unprintable Unprintable object>"


# -- safe mode -------------------------------------------------------------------------------

MARKER = "marker"


class Evil(Exception):
    """Unpickling this writes a marker file: the proof that code ran in the caller."""

    def __init__(self, marker: str) -> None:
        super().__init__(marker)
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_safe_mode_brings_any_exception_back_as_remote_error_without_unpickling() -> None:
    kind, error = run_in_fresh_process(divmod, 1, 0, safe=True)
    assert kind == "exception"
    assert type(error) is RemoteError
    assert error.type_name == "ZeroDivisionError"
    assert "ZeroDivisionError" in error.remote_traceback


def test_safe_exceptions_carry_no_pickle() -> None:
    main, *buffers = dumps_exception(CustomError("x"), safe=True)
    envelope = codec.decode(main, buffers)
    assert isinstance(envelope, tuple)
    assert envelope[3] is None


def hostile_envelope(marker: Path) -> bytes:
    pickled = b"P" + pickle.dumps(Evil(str(marker)), protocol=5)
    return codec.encode(("ValueError", "harmless", "Traceback: ...\n", pickled))


def test_the_hostile_envelope_really_runs_code_in_trusted_mode(tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    loads_exception(hostile_envelope(marker))
    assert marker.read_text() == "pwned"


def test_safe_mode_never_unpickles_what_a_hostile_worker_sends(tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    error = loads_exception(hostile_envelope(marker), safe=True)
    assert type(error) is RemoteError
    assert error.message == "harmless"
    pickled_result = b"P" + pickle.dumps(Evil(str(marker)), protocol=5)
    with pytest.raises(UnsafeResultError):
        loads_result(pickled_result, safe=True)
    with pytest.raises(UnsafeResultError):
        loads_result(codec.MAGIC + pickled_result, safe=True)
    assert not marker.exists()


def test_a_sandboxed_function_returning_a_malicious_payload_cannot_run_code_in_safe_mode(
    tmp_path: Path,
) -> None:
    marker = tmp_path / MARKER
    kind, error = run_in_fresh_process(Evil, str(marker), safe=True)
    assert kind == "exception"  # the worker refused to encode it
    assert type(error) is UnsafeResultError
    assert "result is an object of type test_serial.Evil" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert not marker.exists()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(codec.encode([1, 2]), id="not-a-tuple"),
        pytest.param(codec.encode((1, "m", "tb", None)), id="type-name-not-str"),
        pytest.param(codec.encode(("T", "m", "tb", "not bytes")), id="pickle-not-bytes"),
    ],
)
def test_a_malformed_exception_envelope_raises_remote_error(data: bytes) -> None:
    with pytest.raises(RemoteError, match="malformed exception"):
        loads_exception(data)
