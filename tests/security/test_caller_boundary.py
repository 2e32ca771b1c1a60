"""The caller's side of the boundary: a hostile call cannot stall, flood, forge or spy.

The function's code is the attacker, and so is every byte it writes on its
channel back to the caller: it finds that socket among its own descriptors and
writes frames of its own making (:mod:`hostile_channel`). Each test is one of
the findings of issue 14, against a real systemd and a real sandbox; each
keeps a control that shows the attack reaches the caller where nothing stops it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escape_kit import in_sandbox
from hostile_channel import (
    LOG,
    OUTPUT,
    PARTIAL,
    RESULT,
    STARTED,
    channel,
    empty_sets,
    encode,
    frame,
    header,
)

from sandboxed import (
    Hardened,
    PrivateTmp,
    SandboxTimeoutError,
    TransientUnitPoolExecutor,
    UnsafeResultError,
    WorkerDiedError,
)

pytestmark = pytest.mark.systemd

TOKEN = secrets.token_hex(6)
# One unit per option set; SyslogIdentifier= keeps these apart from other modules' units.
TIMED = in_sandbox(Hardened, timeout=2, SyslogIdentifier=f"caller-{TOKEN}")
HARDENED = in_sandbox(Hardened, SyslogIdentifier=f"caller-{TOKEN}")
TWO = in_sandbox(Hardened, workers=2, SyslogIdentifier=f"caller2-{TOKEN}")
ONE = in_sandbox(Hardened, workers=1, SyslogIdentifier=f"caller1-{TOKEN}")
TRUSTED_ONE = in_sandbox(PrivateTmp, workers=1, SyslogIdentifier=f"caller1-{TOKEN}")
TRUSTED_TIMED = in_sandbox(PrivateTmp, timeout=2, SyslogIdentifier=f"caller-{TOKEN}")
TRUSTED = in_sandbox(PrivateTmp, SyslogIdentifier=f"caller-{TOKEN}")  # TRUSTED_TIMED's unit


# -- what the hostile functions do (they run in the sandbox) ---------------------------------


def forge_result(value: Any) -> None:
    """Write a RESULT frame of our own, then vanish."""
    channel().sendall(frame(RESULT, [encode(value)]))
    os._exit(0)


def send_started_for(seconds: float) -> str:
    ch = channel()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ch.sendall(frame(STARTED, []))
        time.sleep(0.3)
    return "escaped the timeout"


def trickle_result(value: Any, delay: float) -> None:
    """A valid RESULT frame, one byte at a time."""
    ch = channel()
    data = frame(RESULT, [encode(value)])
    for i in range(len(data)):
        ch.sendall(data[i : i + 1])
        time.sleep(delay)
    os._exit(0)


def announce_then_stall(size: int) -> None:
    """A RESULT header announcing ``size`` bytes, a few of them, then nothing."""
    ch = channel()
    ch.sendall(header(RESULT, [size]) + b"SBC\x01")
    time.sleep(3600)


def return_empty_sets(n: int) -> None:
    channel().sendall(frame(RESULT, [empty_sets(n)]))
    os._exit(0)


def ordinary_records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"user-{i}", "score": i * 0.5, "tags": ["a", "b"]} for i in range(n)]


def forge_logs(records: list[dict[str, Any]]) -> str:
    ch = channel()
    for rec in records:
        ch.sendall(frame(LOG, [encode(rec)]))
    return "logged"


def print_escapes() -> str:
    print("before \x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b after")
    return "printed"


def flood_output(mib: int) -> str:
    """One OUTPUT frame of ``mib`` MiB, sent in pieces."""
    ch = channel()
    ch.sendall(header(OUTPUT, [6, mib << 20]) + b"stdout")
    chunk = b"x" * ((1 << 20) - 1) + b"\n"
    for _ in range(mib):
        ch.sendall(chunk)
    return "flooded"


def victim(secret: str, ready: str, done: str) -> str:
    """Holds ``secret`` until the attacker is done, then returns it."""
    Path(ready).write_text(str(os.getpid()))
    end = time.monotonic() + 60
    while not Path(done).exists() and time.monotonic() < end:
        time.sleep(0.05)
    return secret


def _regions(maps: str) -> list[tuple[int, int]]:
    out = []
    for line in maps.splitlines():
        fields = line.split()
        span, perms = fields[0], fields[1]
        start, end = (int(x, 16) for x in span.split("-"))
        if perms.startswith("rw") and end - start <= 64 << 20:
            out.append((start, end))
    return out


def _steal(pid: int, needle: bytes) -> str:
    """Read ``pid``'s memory through /proc/<pid>/mem; overwrite what follows ``needle``."""
    found = b""
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        for start, end in _regions(Path(f"/proc/{pid}/maps").read_text()):
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            at = data.find(needle)
            while at >= 0:
                found = data[at : at + len(needle) + 12]
                mem.seek(start + at + len(needle))
                mem.write(b"OVERWRITTEN!")
                at = data.find(needle, at + 1)
    return "read " + found.decode(errors="replace") if found else "nothing found"


def _vm_readv(pid: int) -> str:
    """process_vm_readv of a page at an address this process has too (forked alike)."""
    import ctypes

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    start, _ = _regions(Path("/proc/self/maps").read_text())[0]
    buf = ctypes.create_string_buffer(4096)
    local = Iovec(ctypes.cast(buf, ctypes.c_void_p), 4096)
    remote = Iovec(start, 4096)
    libc = ctypes.CDLL(None, use_errno=True)
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        import errno

        return f"OSError {errno.errorcode.get(ctypes.get_errno(), '?')}"
    return "ok"


def spy(ready: str, done: str) -> dict[str, str]:
    """Wait for the victim, then read and rewrite its memory and the supervisor's."""
    end = time.monotonic() + 60
    while not Path(ready).exists() and time.monotonic() < end:
        time.sleep(0.05)
    other = int(Path(ready).read_text())
    try:
        return {
            "sibling /proc/pid/mem": _try(lambda: _steal(other, b"SECRET-")),
            "sibling process_vm_readv": _try(lambda: _vm_readv(other)),
            "supervisor /proc/pid/mem": _try(lambda: _steal(os.getppid(), b"SBC")),
            "supervisor process_vm_readv": _try(lambda: _vm_readv(os.getppid())),
        }
    finally:
        Path(done).write_text("done")


def _try(action: Any) -> str:
    try:
        return str(action())
    except OSError as e:
        import errno

        return f"{type(e).__name__} {errno.errorcode.get(e.errno or 0, '?')}"


def plant_and_subvert(marker: str) -> str:
    """Leave state behind: a builtin, and the worker's own call and result functions
    replaced so that later calls return a forgery carrying their stolen arguments."""
    import builtins
    import sys

    builtins.__dict__["_sandboxed_planted"] = marker
    stolen: list[Any] = []
    for mod in list(sys.modules.values()):
        loads = getattr(mod, "loads_call", None)
        dumps = getattr(mod, "dumps_result", None)
        if callable(loads):

            def spying_loads(*a: Any, _real: Any = loads, **k: Any) -> Any:
                call = _real(*a, **k)
                stolen.append(call[1])
                return call

            with contextlib.suppress(Exception):
                mod.loads_call = spying_loads
        if callable(dumps):

            def forging_dumps(value: Any, *a: Any, _real: Any = dumps, **k: Any) -> Any:
                return _real(f"forged by {marker}, stole {stolen!r}", *a, **k)

            with contextlib.suppress(Exception):
                mod.dumps_result = forging_dumps
    return "planted"


def echo(value: Any) -> Any:
    return value


def planted() -> Any:
    import builtins

    return builtins.__dict__.get("_sandboxed_planted")


def forge_partial_for_next(value: str) -> str:
    """In a batch, claim the outcome of the task after this one (index 1)."""
    ch = channel()
    ch.sendall(frame(PARTIAL, [encode((1, True)), encode(value)]))
    return "task A"


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slow"


def leave_children(pidfile: str, then: str) -> None:
    """A direct child and a daemonised grandchild, both sleeping; then overrun or fail."""
    direct = os.fork()
    if direct == 0:
        time.sleep(3600)
        os._exit(0)
    middle = os.fork()
    if middle == 0:
        if os.fork():
            os._exit(0)
        Path(pidfile + ".daemon").write_text(str(os.getpid()))
        time.sleep(3600)
        os._exit(0)
    os.waitpid(middle, 0)
    while not Path(pidfile + ".daemon").exists():
        time.sleep(0.01)
    Path(pidfile).write_text(f"{direct} {Path(pidfile + '.daemon').read_text()}")
    if then == "overrun":
        time.sleep(3600)
    raise ValueError("failing with children left behind")


def still_running(pidfile: str, wait: float) -> list[int]:
    """The pids of ``pidfile`` still alive once they had ``wait`` seconds to go away."""
    pids = [int(p) for p in Path(pidfile).read_text().split()]
    end = time.monotonic() + wait
    while True:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive.append(pid)
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.1)


# -- 1. deadlines the worker cannot move -----------------------------------------------------


def test_a_raw_frame_written_by_the_function_reaches_the_caller() -> None:
    """Control: the function does own its channel; a frame it writes is what comes back."""
    assert HARDENED(forge_result, "written by hand") == "written by hand"


def test_started_frames_do_not_extend_the_deadline() -> None:
    with pytest.raises(SandboxTimeoutError):
        TIMED(send_started_for, 8.0)


def test_a_frame_trickled_byte_by_byte_cannot_outlast_the_deadline() -> None:
    with pytest.raises(SandboxTimeoutError):
        TIMED(trickle_result, "escaped the timeout", 0.25)


def test_a_frame_announced_but_never_finished_is_a_timeout() -> None:
    with pytest.raises(SandboxTimeoutError):
        TIMED(announce_then_stall, 1 << 20)


def test_a_trickled_frame_times_out_in_trusted_mode_too() -> None:
    with pytest.raises(SandboxTimeoutError):
        TRUSTED_TIMED(send_started_for, 8.0)


# -- 2. bounded decoding in safe mode --------------------------------------------------------


def test_a_result_of_many_empty_sets_is_refused_not_built() -> None:
    with pytest.raises(UnsafeResultError, match=r"budget|memory"):
        HARDENED(return_empty_sets, 400_000)


def test_ordinary_plain_data_still_comes_back_in_safe_mode() -> None:
    assert HARDENED(ordinary_records, 20_000) == ordinary_records(20_000)


def test_the_decoding_budget_can_be_set_by_the_user() -> None:
    small = in_sandbox(Hardened, max_decoded="1M", SyslogIdentifier=f"caller-{TOKEN}")
    assert small(ordinary_records, 10) == ordinary_records(10)
    with pytest.raises(UnsafeResultError, match="max_decoded"):
        small(ordinary_records, 20_000)


# -- 3. log records are data ------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def capture(name: str) -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger(name)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_log_records_land_under_the_remote_prefix_only() -> None:
    forged = {
        "name": "myapp.audit",
        "levelno": 50,
        "levelname": "CRITICAL",
        "msg": "forged audit entry",
        "pathname": "/srv/myapp/audit.py",
        "lineno": 7,
        "process": 1,
    }
    assert HARDENED(echo, "warm") == "warm"  # the caller's own loggers (dill's) exist now
    with capture("myapp.audit") as audit, capture("sandboxed.remote") as remote:
        before = set(logging.Logger.manager.loggerDict)
        assert HARDENED(forge_logs, [forged]) == "logged"
    assert audit.records == [r for r in audit.records if r.name.startswith("sandboxed.remote")]
    assert [r.name for r in remote.records] == ["sandboxed.remote.myapp.audit"]
    record = remote.records[0]
    assert record.getMessage() == "forged audit entry"
    # What the sandbox claims about the record's origin is kept, but not as the caller's own.
    assert (record.pathname, record.lineno, record.process) != ("/srv/myapp/audit.py", 7, 1)
    assert record.process == os.getpid()
    assert record.remote_pathname == "/srv/myapp/audit.py"  # type: ignore[attr-defined]
    new = set(logging.Logger.manager.loggerDict) - before
    assert all(n.startswith("sandboxed.remote") for n in new), sorted(new)


NAMES = in_sandbox(Hardened, SyslogIdentifier=f"names-{TOKEN}")  # a share of its own


def test_hostile_logger_names_cost_a_bounded_number_of_loggers() -> None:
    assert NAMES(echo, "warm") == "warm"
    before = set(logging.Logger.manager.loggerDict)
    records = [{"name": "." * 2000, "levelno": 40, "msg": "dots"}]
    records += [{"name": f"n{i}.x{i}", "levelno": 40, "msg": "many"} for i in range(600)]
    records += [{"name": "a" * 100_000, "levelno": 40, "msg": "long"}]
    with capture("sandboxed.remote") as remote:
        assert NAMES(forge_logs, records) == "logged"
    new = set(logging.Logger.manager.loggerDict) - before
    assert all(n.startswith("sandboxed.remote") for n in new), sorted(new)[:5]
    assert len(new) <= 300
    assert max(len(n) for n in new) <= 300
    # Every record still arrives, on a bounded logger; other sandboxes keep their names.
    assert len(remote.records) == len(records)
    with capture("sandboxed.remote") as other:
        assert HARDENED(forge_logs, [{"name": "fresh.name", "levelno": 40, "msg": "m"}])
    assert [r.name for r in other.records] == ["sandboxed.remote.fresh.name"]


def test_log_levels_are_mapped_to_known_levels_and_bad_fields_do_not_raise() -> None:
    records = [
        {"name": "x", "levelno": "40", "msg": "a level as a str"},
        {"name": "x", "levelno": 45, "msg": "between ERROR and CRITICAL"},
        {"name": "x", "levelno": 10**30, "msg": "huge"},
        {"name": "x", "levelno": -3, "msg": "negative"},
        {"name": 7, "levelno": 30, "msg": ["not", "a", "str"], "lineno": "x", "created": "x"},
        {"name": "x", "levelno": 30, "msg": "m" * (1 << 20)},
    ]
    with capture("sandboxed.remote") as remote:
        assert HARDENED(forge_logs, records) == "logged"
    levels = {r.levelno for r in remote.records}
    assert levels <= {logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL}
    assert len(remote.records) == len(records)
    assert remote.records[1].levelno == logging.ERROR
    assert max(len(r.getMessage()) for r in remote.records) <= 70_000


def test_the_log_prefix_is_the_callers_choice() -> None:
    mine = in_sandbox(Hardened, log_prefix="tests.sandbox", SyslogIdentifier=f"caller-{TOKEN}")
    with capture("tests.sandbox") as got:
        assert mine(forge_logs, [{"name": "lib", "levelno": 30, "msg": "hi"}]) == "logged"
    assert [r.name for r in got.records] == ["tests.sandbox.lib"]


# -- 4. output and the terminal ---------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Counter(io.TextIOBase):
    """A stream that counts what is written to it, keeping none of it."""

    def __init__(self) -> None:
        self.chars = 0
        self.largest = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.chars += len(s)
        self.largest = max(self.largest, len(s))
        return len(s)


def test_control_characters_are_escaped_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    term = FakeTerminal()
    monkeypatch.setattr("sys.stdout", term)
    assert HARDENED(print_escapes) == "printed"
    text = term.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "before " in text and " after\n" in text
    assert "\\x1b]0;pwned" in text


def test_output_to_a_file_or_with_raw_output_is_passed_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = io.StringIO()
    monkeypatch.setattr("sys.stdout", plain)
    assert HARDENED(print_escapes) == "printed"
    assert "\x1b]0;pwned\x07" in plain.getvalue()
    raw = in_sandbox(Hardened, raw_output=True, SyslogIdentifier=f"caller-{TOKEN}")
    term = FakeTerminal()
    monkeypatch.setattr("sys.stdout", term)
    assert raw(print_escapes) == "printed"
    assert "\x1b]0;pwned\x07" in term.getvalue()


def test_a_huge_output_frame_is_streamed_with_bounded_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = Counter()
    monkeypatch.setattr("sys.stdout", sink)
    tracemalloc.start()
    try:
        assert HARDENED(flood_output, 64) == "flooded"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.chars == 64 << 20
    assert sink.largest <= 1 << 20
    assert peak < 16 << 20, f"peak {peak >> 20} MiB of Python memory for a 64 MiB frame"


# -- 5. calls cannot read or write each other -------------------------------------------------


def test_a_call_cannot_read_or_write_another_calls_memory_or_the_supervisors() -> None:
    secret = f"SECRET-{secrets.token_hex(6)}"
    ready, done = f"/tmp/ready-{TOKEN}", f"/tmp/done-{TOKEN}"
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.setdefault("victim", TWO(victim, secret, ready, done)))
    t.start()
    try:
        spied = TWO(spy, ready, done)
    finally:
        t.join(90)
    assert got["victim"] == secret, "the victim's data was rewritten by another call"
    refused = ("PermissionError", "FileNotFoundError", "OSError EPERM")
    for what, outcome in spied.items():
        assert outcome.startswith(refused), (what, outcome)


# -- 6. no state survives from one untrusted call to the next ----------------------------------


def test_an_untrusted_call_leaves_nothing_for_the_next_one() -> None:
    ONE(plant_and_subvert, "attacker")  # its own result may already be forged
    assert ONE(echo, "second caller's data") == "second caller's data"
    assert ONE(planted) is None
    assert ONE(echo, {"third": 3}) == {"third": 3}


def test_trusted_code_keeps_its_warm_worker() -> None:
    """Control: where nothing stops it (trusted mode, warm reuse), state does persist."""
    TRUSTED_ONE(plant_and_subvert, "trusted")
    assert "forged by trusted" in str(TRUSTED_ONE(planted))


def test_batched_untrusted_tasks_cannot_speak_for_one_another() -> None:
    with TransientUnitPoolExecutor(1, Hardened, SyslogIdentifier=f"pool-{TOKEN}") as pool:
        first = pool.submit(slow, 1.5)
        a = pool.submit(forge_partial_for_next, "forged for B")
        b = pool.submit(echo, "B's own result")
        assert first.result(60) == "slow"
        assert b.result(60) == "B's own result"
        # A itself may fail: a PARTIAL frame outside a batch breaks the protocol.
        assert a.exception(60) is None or isinstance(a.exception(), WorkerDiedError)


# -- 7. a timed-out or failed call leaves nothing running ---------------------------------------


@pytest.mark.parametrize(
    ("box", "then", "check"),
    [
        (TIMED, "overrun", HARDENED),
        (HARDENED, "fail", HARDENED),
        (TRUSTED_TIMED, "overrun", TRUSTED),
        (TRUSTED, "fail", TRUSTED),
    ],
    ids=["untrusted-timeout", "untrusted-failure", "trusted-timeout", "trusted-failure"],
)
def test_a_timed_out_or_failed_call_leaves_no_process_behind(
    box: Any, then: str, check: Any
) -> None:
    """The call's children (a direct one, and a daemonised one) are gone afterwards; the
    check runs in the same unit (``check`` differs from ``box`` only in its timeout)."""
    pidfile = f"/tmp/children-{TOKEN}-{then}-{secrets.token_hex(3)}"
    with pytest.raises(SandboxTimeoutError if then == "overrun" else Exception) as raised:
        box(leave_children, pidfile, then)
    if then == "fail":
        assert "failing with children left behind" in str(raised.value)
    assert check(still_running, pidfile, 20.0) == []


def _run_on_a_terminal(*flags: str) -> bytes:
    """``sandboxed run`` of a function whose result has escape sequences, its stdout a pty."""
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandboxed",
                "run",
                "--untrusted",
                *flags,
                "hostile_channel:escapes",
            ],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            out += chunk
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")
        return out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_sandboxed_run_escapes_its_printed_result_on_a_terminal() -> None:
    out = _run_on_a_terminal()
    assert b"\x1b" not in out and b"\x07" not in out
    assert b"before \\x1b]0;pwned\\x07\\x1b[2J after" in out
    assert b"\x1b]0;pwned\x07" in _run_on_a_terminal("--raw")
