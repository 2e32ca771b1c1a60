"""``@sandboxed``: every behaviour of issue 4 that is not a directive probe, against a real systemd.

Function kinds and call semantics, async functions, the unit cache, serialization
and errors, output and logging, concurrency and forks, and the lifetime of units.
"""

from __future__ import annotations

import asyncio
import glob
import inspect
import io
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandboxed as sbx
from sandboxed import (
    NoNetwork,
    ReadOnly,
    RemoteError,
    SandboxError,
    SerializationError,
    sandboxed,
)
from sandboxed._errors import RemoteTraceback

pytestmark = pytest.mark.systemd

# Most tests share this one option set (and so one unit); the unit-cache tests use others.
SHARED: dict[str, Any] = {"Environment": "SBX_CASE=decorator"}
PARALLEL: dict[str, Any] = {"Environment": "SBX_CASE=parallel", "workers": 2}


@pytest.fixture(scope="module", autouse=True)
def _stop_units(systemd: Any) -> Iterator[None]:
    yield
    sbx.shutdown()


def unit_names(client: Any, pattern: str = "sandboxed-*") -> set[str]:
    return {u[0] for u in client.list_units([pattern])}


def processes_in(unit: str) -> list[int]:
    """Host PIDs of processes whose cgroup path names ``unit``."""
    pids = []
    for path in glob.glob("/proc/[0-9]*/cgroup"):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if f"/{unit}" in text:
            pids.append(int(path.split("/")[2]))
    return pids


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def python_script(tmp_path: Path, code: str) -> list[str]:
    script = tmp_path / f"script_{uuid.uuid4().hex[:8]}.py"
    script.write_text(textwrap.dedent(code))
    return [sys.executable, str(script)]


# -- the functions under test ----------------------------------------------------------------


@sandboxed(**SHARED)
def add(a: int, b: int = 2, *rest: int, scale: int = 1, **extra: int) -> dict[str, Any]:
    """Add things up, in a sandbox."""
    return {
        "sum": (a + b + sum(rest)) * scale,
        "extra": extra,
        "pid": os.getpid(),
    }


class Boom(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"boom {self.code}"


class NotRebuildable(Exception):
    """Pickles as ``cls(message)``, but ``__init__`` wants two arguments: cannot come back."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


@sandboxed(**SHARED)
def raise_boom(code: int) -> None:
    raise Boom(code)


@sandboxed(**SHARED)
def raise_not_rebuildable() -> None:
    raise NotRebuildable(1, 2)


@sandboxed(**SHARED)
def raise_system_exit() -> None:
    raise SystemExit(7)


@sandboxed(**SHARED)
def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


@sandboxed(**SHARED)
def identity(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


@sandboxed(**SHARED)
def return_generator() -> Any:
    return (x for x in range(3))


@sandboxed(**SHARED)
def worker_pid() -> int:
    return os.getpid()


@sandboxed(**SHARED)
def print_slowly(pause: float) -> str:
    print("first line")
    time.sleep(pause)
    print("second line")
    print("to stderr", file=sys.stderr)
    os.write(1, b"c-level stdout\n")
    os.write(2, b"c-level stderr\n")
    return "returned"


@sandboxed(**SHARED)
def log_things() -> str:
    logging.getLogger("sbx.inside").info("info from inside %s", 41)
    logging.getLogger("sbx.inside").warning("warning from inside %s", 42)
    return "logged"


@sandboxed(**SHARED)
async def async_sleep_then_write(seconds: float, path: str) -> str:
    time.sleep(seconds)  # blocking on purpose: the caller's loop must not care
    with open(path, "w") as f:
        f.write("written")
    return path


@sandboxed(**PARALLEL)
def interval(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@sandboxed(**PARALLEL)
def square(x: int) -> int:
    return x * x


class Counter:
    """Instance state travels with the call; methods of every kind run sandboxed."""

    def __init__(self, base: int) -> None:
        self.base = base

    @sandboxed(**SHARED)
    def plus(self, x: int) -> tuple[int, int]:
        """Add to base."""
        return self.base + x, os.getpid()

    @sandboxed(**SHARED)
    @classmethod
    def name_of(cls, suffix: str) -> tuple[str, int]:
        return cls.__name__ + suffix, os.getpid()

    @classmethod
    @sandboxed(**SHARED)
    def name_of_outer(cls, suffix: str) -> tuple[str, int]:
        return cls.__name__ + suffix, os.getpid()

    @sandboxed(**SHARED)
    @staticmethod
    def double(x: int) -> tuple[int, int]:
        return 2 * x, os.getpid()

    @staticmethod
    @sandboxed(**SHARED)
    def triple(x: int) -> tuple[int, int]:
        return 3 * x, os.getpid()


# -- function kinds ----------------------------------------------------------------------------


def test_a_plain_function_runs_in_the_unit_with_the_same_call_semantics() -> None:
    got = add(1, 2, 3, 4, scale=10, note=5)
    assert got["sum"] == 100
    assert got["extra"] == {"note": 5}
    assert got["pid"] != os.getpid()
    assert add(1)["sum"] == 3  # defaults apply
    with pytest.raises(TypeError):
        add()  # type: ignore[call-arg]  # a missing argument is still a TypeError


def test_the_decorated_function_keeps_name_docstring_and_signature() -> None:
    plain = add.__wrapped__
    assert add.__name__ == "add"
    assert add.__qualname__ == "add"
    assert add.__doc__ == "Add things up, in a sandbox."
    assert inspect.signature(add) == inspect.signature(plain)
    assert str(inspect.signature(Counter(1).plus)) == "(x: 'int') -> 'tuple[int, int]'"
    assert Counter.plus.__doc__ == "Add to base."


def test_a_closure_runs_with_its_captured_values() -> None:
    def make(offset: int) -> Any:
        @sandboxed(**SHARED)
        def inner(x: int) -> tuple[int, int]:
            return x + offset, os.getpid()

        return inner

    value, pid = make(100)(1)
    assert value == 101 and pid != os.getpid()
    assert make(5)(1)[0] == 6


def test_a_lambda_runs_sandboxed() -> None:
    fn = sandboxed(**SHARED)(lambda x: (x * 3, os.getpid()))
    value, pid = fn(4)
    assert value == 12 and pid != os.getpid()
    assert fn.__name__ == "<lambda>"


def test_instance_methods_run_with_the_instances_state() -> None:
    value, pid = Counter(40).plus(2)
    assert value == 42 and pid != os.getpid()
    assert Counter.plus(Counter(1), 1)[0] == 2  # called through the class


def test_classmethods_run_sandboxed_in_either_decorator_order() -> None:
    class Sub(Counter):
        pass

    for method in (Counter.name_of, Counter.name_of_outer):
        name, pid = method("!")
        assert name == "Counter!" and pid != os.getpid()
    # The class, not the defining one, is what the method sees.
    assert Sub.name_of("?")[0] == "Sub?"
    assert Sub.name_of_outer("?")[0] == "Sub?"


def test_staticmethods_run_sandboxed_in_either_decorator_order() -> None:
    assert Counter.double(4)[0] == 8
    assert Counter.triple(4)[0] == 12
    assert Counter(0).double(5)[0] == 10
    assert Counter.double(1)[1] != os.getpid()


def test_a_function_defined_in_main_runs_sandboxed(tmp_path: Path) -> None:
    argv = python_script(
        tmp_path,
        """
        import os
        from sandboxed import sandboxed

        FACTOR = 7

        def helper(x):
            return x * FACTOR

        @sandboxed(Environment="SBX_CASE=main")
        def compute(x):
            return helper(x), os.getpid()

        value, pid = compute(6)
        assert pid != os.getpid()
        print("RESULT", value, compute.__name__)
        """,
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RESULT 42 compute" in out.stdout


def test_the_same_function_decorated_with_two_option_sets_runs_with_each_its_own() -> None:
    def whoami() -> int:
        return os.getuid()

    as_nobody = sandboxed(User="nobody", Environment="SBX_CASE=decorator")(whoami)
    as_root = sandboxed(**SHARED)(whoami)
    assert as_nobody() == 65534
    assert as_root() == 0
    assert as_nobody() == 65534


# -- async -----------------------------------------------------------------------------------


def test_an_async_function_returns_an_awaitable_with_the_result(tmp_path: Path) -> None:
    path = f"/tmp/sbx-async-{uuid.uuid4().hex}"
    awaitable = async_sleep_then_write(0.0, path)
    assert inspect.isawaitable(awaitable)
    assert asyncio.run(awaitable) == path
    os.unlink(path)


def test_an_async_call_does_not_block_the_event_loop() -> None:
    path = f"/tmp/sbx-async-{uuid.uuid4().hex}"

    async def main() -> tuple[int, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        t = asyncio.create_task(ticker())
        result = await async_sleep_then_write(0.6, path)
        t.cancel()
        return ticks, result

    ticks, result = asyncio.run(main())
    os.unlink(path)
    assert result == path
    assert ticks >= 10  # ~30 would fit in 0.6 s; a blocked loop gets none


def test_cancelling_the_awaiting_task_stops_the_remote_call() -> None:
    path = f"/tmp/sbx-async-cancel-{uuid.uuid4().hex}"

    async def main() -> None:
        task = asyncio.create_task(async_sleep_then_write(1.0, path))
        await asyncio.sleep(0.4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    time.sleep(1.2)  # past the moment the remote code would have written the file
    assert not os.path.exists(path)
    # The unit still serves calls after the cancelled one.
    assert asyncio.run(async_sleep_then_write(0.0, path)) == path
    os.unlink(path)


# -- the unit cache --------------------------------------------------------------------------


def test_equal_option_sets_share_one_unit_and_a_different_set_gets_another(client: Any) -> None:
    tag = f"SBX_CASE=units-{uuid.uuid4().hex[:6]}"

    def f() -> int:
        return os.getpid()

    def g() -> int:
        return os.getpid()

    first = sandboxed(NoNetwork, ReadOnly, CPUQuota=0.2, Environment=tag)(f)
    same = sandboxed(ReadOnly, NoNetwork, CPUQuota="20%", Environment=tag)(g)
    other = sandboxed(NoNetwork, ReadOnly, CPUQuota=0.3, Environment=tag)(f)
    assert first.sandbox.unit_name is None  # created lazily, on the first call
    first()
    same()
    other()
    assert first.sandbox is same.sandbox
    assert first.sandbox.unit_name == same.sandbox.unit_name
    assert other.sandbox.unit_name != first.sandbox.unit_name
    for name in (first.sandbox.unit_name, other.sandbox.unit_name):
        assert name is not None and name.startswith("sandboxed-")
        assert name in unit_names(client)


def test_unit_names_never_collide_between_processes(tmp_path: Path, client: Any) -> None:
    argv = python_script(
        tmp_path,
        """
        import sys
        from sandboxed import sandboxed

        @sandboxed(Environment="SBX_CASE=collide")
        def f():
            return 1

        f()
        print(f.sandbox.unit_name, flush=True)
        sys.stdin.readline()
        """,
    )
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        names = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
        assert all(n.startswith("sandboxed-") for n in names), names
        assert names[0] != names[1]
        assert set(names) <= unit_names(client)  # both alive at once
    finally:
        for p in procs:
            p.communicate("\n", timeout=60)


# -- serialization and errors -----------------------------------------------------------------


def test_a_users_exception_comes_back_as_itself_with_the_remote_traceback_as_cause() -> None:
    with pytest.raises(Boom) as info:
        raise_boom(13)
    assert type(info.value) is Boom
    assert info.value.code == 13
    assert str(info.value) == "boom 13"
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_boom" in cause.tb and "Boom: boom 13" in cause.tb


def test_an_exception_that_cannot_be_rebuilt_comes_back_as_remote_error() -> None:
    with pytest.raises(RemoteError) as info:
        raise_not_rebuildable()
    err = info.value
    assert err.type_name.endswith("NotRebuildable")
    assert err.message == "1-2"
    assert "raise_not_rebuildable" in err.remote_traceback


def test_an_unpicklable_argument_raises_serialization_error_naming_it() -> None:
    with pytest.raises(SerializationError) as positional:
        identity(1, (x for x in range(2)))
    assert "argument 1" in positional.value.which
    with pytest.raises(SerializationError) as keyword:
        identity(1, data=(x for x in range(2)))
    assert "'data'" in keyword.value.which
    assert "data" in str(keyword.value)


def test_an_unpicklable_result_raises_serialization_error() -> None:
    with pytest.raises(SerializationError) as info:
        return_generator()
    assert info.value.which == "result"
    assert identity(1) == ((1,), {})  # and the unit keeps serving


def test_system_exit_and_keyboard_interrupt_inside_do_not_kill_the_caller() -> None:
    pid = worker_pid()
    for fn, name in (
        (raise_system_exit, "SystemExit"),
        (raise_keyboard_interrupt, "KeyboardInterrupt"),
    ):
        with pytest.raises(SandboxError) as info:
            fn()
        assert not isinstance(info.value, (SystemExit, KeyboardInterrupt))
        assert name in str(info.value)
    assert worker_pid() == pid  # the worker survived too


# -- output and logging ----------------------------------------------------------------------


class Stamped(io.TextIOBase):
    """A stream that remembers when each write arrived."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []

    def write(self, s: str) -> int:
        self.writes.append((time.monotonic(), s))
        return len(s)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(s for _, s in self.writes)


def test_prints_reach_the_callers_streams_as_they_are_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, err = Stamped(), Stamped()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert print_slowly(0.6) == "returned"
    returned = time.monotonic()
    first = next(t for t, s in out.writes if "first line" in s)
    assert returned - first >= 0.4, "the first line only arrived with the result"
    assert out.text().index("first line") < out.text().index("second line")
    assert "c-level stdout\n" in out.text()
    assert "to stderr\n" in err.text() and "c-level stderr\n" in err.text()
    assert "stderr" not in out.text()


def test_logging_records_reach_the_callers_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert log_things() == "logged"
    # They land under the remote prefix (never on a logger of the caller's own), with
    # what the sandbox said of their origin kept as remote_* attributes.
    inside = [r for r in caplog.records if r.name == "sandboxed.remote.sbx.inside"]
    assert [(r.levelno, r.getMessage()) for r in inside] == [
        (logging.INFO, "info from inside 41"),
        (logging.WARNING, "warning from inside 42"),
    ]
    assert inside[0].remote_process != os.getpid()  # type: ignore[attr-defined]
    assert inside[0].remote_name == "sbx.inside"  # type: ignore[attr-defined]


# -- concurrency -----------------------------------------------------------------------------


@sandboxed(**PARALLEL)
def occupy(directory: str) -> int:
    """Arrive (calls are numbered 1, 2, 3...) and stay until this call and the other of
    its pair (1-2, 3-4...) have seen each other, at most a minute; return the most
    calls seen present at once."""
    me = os.path.join(directory, f"present-{uuid.uuid4().hex}")
    open(me, "w").close()  # before arriving: a partner that sees us arrived sees us present
    number = 1
    while True:
        try:
            os.close(os.open(os.path.join(directory, f"arrived-{number}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            number += 1
    partner = number + 1 if number % 2 else number - 1
    most, met = 0, False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = os.listdir(directory)
        most = max(most, sum(n.startswith("present-") for n in names))
        if not met and f"arrived-{partner}" in names:
            # The partner stays until it sees this marker, so it was present just now.
            open(os.path.join(directory, f"met-{number}"), "w").close()
            met = True
        if met and f"met-{partner}" in names:
            break
        time.sleep(0.01)
    os.unlink(me)
    return most


def test_threads_run_in_parallel_up_to_the_units_worker_count(tmp_path: Path) -> None:
    # Each call waits for its partner: with one worker a pair never meets (the first
    # call would wait out its minute alone); with more than workers=2 in flight, a
    # third call would be present beside a pair.
    tmp_path.chmod(0o777)
    seen: list[int] = []
    threads = [
        threading.Thread(target=lambda: seen.append(occupy(str(tmp_path)))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [2, 2, 2, 2]


@sandboxed()
def rendezvous(directory: str, n: int) -> int:
    """Arrive, then wait (at most a minute) until ``n`` calls have arrived; how many did."""
    open(os.path.join(directory, uuid.uuid4().hex), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(directory)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(os.listdir(directory))


def test_by_default_as_many_calls_run_at_once_as_a_thread_pool_runs_threads(
    tmp_path: Path,
) -> None:
    # Calls that wait (I/O, sleeps) must not queue behind the CPU count: the default
    # is ThreadPoolExecutor's min(32, CPUs + 4), and that many calls are in flight at once.
    n = min(32, (os.cpu_count() or 1) + 4)
    assert rendezvous.sandbox.max_workers == n
    tmp_path.chmod(0o777)
    seen: list[int] = []
    threads = [
        threading.Thread(target=lambda: seen.append(rendezvous(str(tmp_path), n))) for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [n] * n


def test_concurrent_calls_from_many_threads_each_get_their_own_result() -> None:
    got: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(base: int) -> None:
        try:
            for i in range(base, base + 10):
                got[i] = square(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(b * 10,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert got == {i: i * i for i in range(80)}


def test_a_forked_child_uses_its_own_unit_and_the_parent_keeps_its_own(client: Any) -> None:
    parent_pid = worker_pid()
    parent_unit = worker_pid.sandbox.unit_name
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            child_worker = worker_pid()
            line = f"{worker_pid.sandbox.unit_name} {child_worker}\n"
            os.write(w, line.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        line = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_unit, child_worker = line.split()
    assert child_unit.startswith("sandboxed-") and child_unit != parent_unit
    assert int(child_worker) != parent_pid
    assert worker_pid() == parent_pid  # the parent's worker and channel still work
    assert worker_pid.sandbox.unit_name == parent_unit
    # The child died without atexit: its unit follows it all the same.
    assert wait_until(lambda: child_unit not in unit_names(client), 5.0)


def _call_square(x: int) -> tuple[int, str | None]:
    return square(x), square.sandbox.unit_name


def test_a_multiprocessing_fork_child_gets_its_own_unit() -> None:
    square(1)
    parent_unit = square.sandbox.unit_name
    with multiprocessing.get_context("fork").Pool(1) as pool:
        value, child_unit = pool.apply(_call_square, (7,))
    assert value == 49
    assert child_unit is not None and child_unit != parent_unit
    assert square(3) == 9


# -- lifetime --------------------------------------------------------------------------------


def test_shutdown_stops_the_units_and_the_next_call_starts_a_new_one(client: Any) -> None:
    def f() -> int:
        return os.getpid()

    fn = sandboxed(Environment="SBX_CASE=shutdown")(f)
    fn()
    name = fn.sandbox.unit_name
    assert name in unit_names(client)
    sbx.shutdown()
    assert name not in unit_names(client)
    assert fn() > 0
    assert fn.sandbox.unit_name not in (None, name)


def test_interpreter_exit_stops_the_units(tmp_path: Path, client: Any) -> None:
    argv = python_script(
        tmp_path,
        """
        from sandboxed import sandboxed

        @sandboxed(Environment="SBX_CASE=exit")
        def f():
            return 1

        f()
        print(f.sandbox.unit_name)
        """,
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    assert name.startswith("sandboxed-")
    assert name not in unit_names(client)
    assert processes_in(name) == []


def test_a_caller_killed_with_sigkill_leaves_no_unit_process_or_temp_file(
    tmp_path: Path, client: Any
) -> None:
    argv = python_script(
        tmp_path,
        """
        import threading, time
        from sandboxed import sandboxed

        @sandboxed(PrivateTmp=True, Environment="SBX_CASE=sigkill")
        def linger(seconds):
            open("/tmp/inside", "w").write("x")
            time.sleep(seconds)

        threading.Thread(target=linger, args=(60,), daemon=True).start()
        while linger.sandbox.unit_name is None:
            time.sleep(0.05)
        time.sleep(0.5)
        print(linger.sandbox.unit_name, flush=True)
        time.sleep(60)
        """,
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert name.startswith("sandboxed-"), name
        assert name in unit_names(client)
        assert len(processes_in(name)) >= 2  # the supervisor and the busy worker
        assert glob.glob(f"/tmp/systemd-private-*-{name}-*")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    gone = wait_until(
        lambda: (
            name not in unit_names(client)
            and not processes_in(name)
            and not glob.glob(f"/tmp/systemd-private-*-{name}-*")
            and not glob.glob(f"/var/tmp/systemd-private-*-{name}-*")
        ),
        5.0,
    )
    assert gone, (unit_names(client), processes_in(name))
