"""Mistakes caught before anything runs (issue 16): no systemd needed.

Decorating what cannot be sandboxed, an ambiguous ``CPUQuota=``, and values
bound to this process (open files, locks, sockets) that would arrive in the
sandbox as something else: each is refused with an error that says what to
write instead.
"""

from __future__ import annotations

import io
import socket
import threading
from typing import Any

import pytest

from sandboxed import (
    CPU,
    AsUser,
    ConfigurationError,
    InvalidDirectiveValueError,
    Memory,
    NoNetwork,
    SerializationError,
    sandboxed,
)
from sandboxed.wire.serial import dumps_call, dumps_result


def plain(x: int) -> int:
    return x


def gen() -> Any:
    yield 1


async def agen() -> Any:
    yield 1


class Thing:
    pass


# -- decorating ----------------------------------------------------------------------------


def test_decorating_a_number_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        sandboxed(NoNetwork)(42)  # type: ignore[arg-type]
    assert "42" in str(info.value)
    assert "function" in str(info.value)


@pytest.mark.parametrize("fn", [gen, agen], ids=["generator", "async-generator"])
def test_decorating_a_generator_function_is_refused(fn: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        sandboxed(NoNetwork)(fn)
    assert "generator" in str(info.value)
    assert "list" in str(info.value)


def test_decorating_a_bare_generator_function_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        sandboxed(gen)


def test_decorating_a_class_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        sandboxed(NoNetwork)(Thing)
    assert "class" in str(info.value)
    assert "Thing" in str(info.value)


@pytest.mark.parametrize(
    ("factory", "example"),
    [(CPU, "CPU(0.2)"), (Memory, "Memory('512M')"), (AsUser, "AsUser('nobody')")],
    ids=["CPU", "Memory", "AsUser"],
)
def test_a_preset_constructor_without_its_argument_is_refused(factory: Any, example: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sandboxed(factory)(plain)
    assert example in str(info.value)


def test_a_preset_constructor_among_presets_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        sandboxed(NoNetwork, CPU)
    assert "CPU(0.2)" in str(info.value)


# -- CPUQuota= --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [20, 20.0, 2, 1.5], ids=["20", "20.0", "2", "1.5"])
def test_a_bare_cpu_quota_above_one_is_refused_with_the_spellings_meant(value: Any) -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(CPUQuota=value)
    text = str(info.value)
    shown = f"{value / 100:g}"
    assert shown in text
    assert f"'{value:g}%'" in text


@pytest.mark.parametrize("value", [0.2, 1, 1.0, "20%", "150%"])
def test_unambiguous_cpu_quotas_are_accepted(value: Any) -> None:
    sandboxed(CPUQuota=value)(plain)


# -- directive values that cannot work in a sandbox ----------------------------------------


def test_an_unknown_system_call_group_is_refused_when_decorating() -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(SystemCallFilter="@nosuchgroup")
    assert info.value.directive == "SystemCallFilter"
    assert "@nosuchgroup" in str(info.value)
    assert "@system-service" in str(info.value)


def test_root_directory_is_refused_clearly_when_decorating() -> None:
    with pytest.raises(ConfigurationError) as info:
        sandboxed(RootDirectory="/srv/root")
    assert "RootDirectory" in str(info.value)
    assert "interpreter" in str(info.value)


# -- what systemd says, when only the running unit can tell ---------------------------------


def test_memory_max_of_one_kilobyte_is_refused_when_decorating() -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(MemoryMax="1K")
    assert "MiB" in str(info.value)


# -- values bound to this process ----------------------------------------------------------


def test_an_open_file_argument_is_refused_naming_the_argument(tmp_path: Any) -> None:
    path = tmp_path / "keep.txt"
    path.write_text("precious")
    with open(path, "a") as f:
        with pytest.raises(SerializationError) as info:
            dumps_call(plain, (f,), {})
        assert info.value.which == "argument 0"
        assert "open file" in str(info.value)
        assert "path" in str(info.value)
    assert path.read_text() == "precious"


def test_an_open_file_keyword_argument_is_refused(tmp_path: Any) -> None:
    with open(tmp_path / "x", "wb") as f, pytest.raises(SerializationError) as info:
        dumps_call(plain, (), {"out": f})
    assert info.value.which == "argument 'out'"


def test_a_file_inside_a_container_argument_is_refused(tmp_path: Any) -> None:
    with open(tmp_path / "x", "w") as f, pytest.raises(SerializationError) as info:
        dumps_call(plain, ([1, {"log": f}],), {})
    assert info.value.which == "argument 0"


@pytest.mark.parametrize(
    "make",
    [threading.Lock, threading.RLock, threading.Condition, threading.Event, threading.Semaphore],
    ids=["Lock", "RLock", "Condition", "Event", "Semaphore"],
)
def test_a_lock_argument_is_refused(make: Any) -> None:
    with pytest.raises(SerializationError) as info:
        dumps_call(plain, (make(),), {})
    assert "lock" in str(info.value).lower() or "synchronisation" in str(info.value)


def test_a_socket_argument_is_refused() -> None:
    a, b = socket.socketpair()
    try:
        with pytest.raises(SerializationError) as info:
            dumps_call(plain, (a,), {})
        assert "socket" in str(info.value)
    finally:
        a.close()
        b.close()


def test_a_closure_over_an_open_file_is_refused(tmp_path: Any) -> None:
    f = open(tmp_path / "x", "w")  # noqa: SIM115
    try:

        def writes() -> None:
            f.write("x")

        with pytest.raises(SerializationError) as info:
            dumps_call(writes, (), {})
        assert info.value.which == "function"
        assert "open file" in str(info.value)
    finally:
        f.close()


def test_in_memory_files_still_travel() -> None:
    parts = dumps_call(plain, (io.BytesIO(b"data"), io.StringIO("text")), {})
    assert parts


def test_a_result_holding_an_open_file_is_refused(tmp_path: Any) -> None:
    with open(tmp_path / "r", "w") as f, pytest.raises(SerializationError) as info:
        dumps_result({"handle": f})
    assert info.value.which == "result"
    assert "open file" in str(info.value)
