"""Red team: the worker against the caller, over its own control channel.

The function's code owns every byte its worker sends: it can write raw frames
on the channel socket (the one socket among its descriptors) with the wire
module the worker itself uses. Every sandbox here is ``Hardened`` (safe
results, a dynamic user): the preset meant for code you do not trust. What
broke is ``xfail(strict=True)`` with the finding (issue 14's findings that are
re-attacked after their fix landed, and new ones).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from escape_kit import OK, attempt, in_sandbox

from sandboxed import Hardened, NoNetwork, SandboxTimeoutError

pytestmark = pytest.mark.systemd


def channel() -> Any:
    """The worker's channel to the caller: its one socket descriptor."""
    import socket

    for name in os.listdir("/proc/self/fd"):
        with_fd = int(name)
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return socket.socket(fileno=os.dup(with_fd))
        except OSError:
            continue
    raise RuntimeError("no channel socket")


def started_flood(seconds: float) -> str:
    """Send a STARTED frame every 0.3 s for ``seconds``, then return."""
    import time

    from sandboxed.wire.framing import FrameType, send_frame

    sock = channel()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        send_frame(sock, FrameType.STARTED, [])
        time.sleep(0.3)
    return "escaped the deadline"


def trickled_result(seconds: float) -> str:
    """Begin a RESULT frame, then send its last bytes one at a time over ``seconds``."""
    import time

    from sandboxed.wire.framing import FrameType, encode_header

    sock = channel()
    parts = [b"h" * 8, b"p" * 32]
    frame = encode_header(FrameType.RESULT, parts) + b"".join(parts)
    tail = 16
    sock.sendall(frame[:-tail])
    for i in range(tail):
        time.sleep(seconds / tail)
        sock.sendall(frame[len(frame) - tail + i : len(frame) - tail + i + 1])
    time.sleep(3600)  # never reached in a caller that keeps its deadline
    return "escaped"


def test_redteam_started_frames_do_not_move_the_deadline() -> None:
    fn = in_sandbox(Hardened, timeout=2)
    with pytest.raises(SandboxTimeoutError):
        fn(started_flood, 9.0)


def test_redteam_a_trickled_frame_does_not_outlive_the_deadline() -> None:
    fn = in_sandbox(Hardened, timeout=2)
    with pytest.raises(SandboxTimeoutError):
        fn(trickled_result, 12.0)


def test_redteam_control_the_deadline_holds_for_a_plain_overrun() -> None:
    import time

    fn = in_sandbox(Hardened, timeout=2)
    with pytest.raises(SandboxTimeoutError):
        fn(time.sleep, 30)


# -- log records -----------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def caller_logger() -> Iterator[Collect]:
    """A handler on the root logger of the caller: it sees every record, wherever it lands."""
    handler = Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def log_as_caller() -> str:
    """Log on a logger named like one of the caller's own, with a forged origin."""
    import logging

    from sandboxed.wire import codec
    from sandboxed.wire.framing import FrameType, send_frame

    logging.getLogger("app.audit").critical("forged through logging")
    send_frame(
        channel(),
        FrameType.LOG,
        [
            codec.encode(
                {
                    "name": "app.audit",
                    "levelno": 50,
                    "levelname": "CRITICAL",
                    "msg": "forged by frame",
                    "pathname": "/usr/lib/python3/ssl.py",
                    "lineno": 1,
                }
            )
        ],
    )
    return OK


def test_redteam_log_records_land_under_a_prefix_of_the_callers_choosing(
    caller_logger: Collect,
) -> None:
    in_sandbox(Hardened)(log_as_caller)
    forged = [r for r in caller_logger.records if "forged" in str(r.msg)]
    assert forged, "control: the records reached the caller"
    assert all(r.name != "app.audit" for r in forged), [(r.name, r.pathname) for r in forged]


def log_level_as_text() -> str:
    from sandboxed.wire import codec
    from sandboxed.wire.framing import FrameType, send_frame

    send_frame(
        channel(),
        FrameType.LOG,
        [codec.encode({"name": "x", "levelno": "50", "msg": "m"})],
    )
    return OK


def test_redteam_a_malformed_log_record_does_not_fail_the_call(caller_logger: Collect) -> None:
    assert in_sandbox(Hardened)(log_level_as_text) == OK


def many_logger_names(dots: int) -> str:
    from sandboxed.wire import codec
    from sandboxed.wire.framing import FrameType, send_frame

    send_frame(
        channel(),
        FrameType.LOG,
        [codec.encode({"name": "r." * dots + "x", "levelno": 10, "msg": "m"})],
    )
    return OK


def test_redteam_a_logger_name_plants_nothing_in_the_callers_registry() -> None:
    before = len(logging.Logger.manager.loggerDict)
    try:
        in_sandbox(Hardened)(many_logger_names, 2000)
        assert len(logging.Logger.manager.loggerDict) - before < 10
    finally:
        for name in [n for n in logging.Logger.manager.loggerDict if n.startswith("r.")]:
            del logging.Logger.manager.loggerDict[name]


# -- output ----------------------------------------------------------------------------------


def print_escapes() -> str:
    # Set the terminal's title, clear the screen, and an OSC 52 clipboard write.
    print("\x1b]0;owned\x07\x1b[2J\x1b]52;c;ZWNobyBwd25lZA==\x07", flush=True)
    return OK


def test_redteam_output_to_a_terminal_carries_no_terminal_escape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pty
    import sys

    master, slave = pty.openpty()
    term = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", term)
    try:
        assert in_sandbox(Hardened)(print_escapes) == OK
        term.flush()
        out = os.read(master, 1 << 16)
    finally:
        term.close()
        os.close(master)
    assert b"owned" in out, "control: the output reached the caller"
    assert b"\x1b" not in out and b"\x07" not in out, out


def test_redteam_control_output_to_a_pipe_is_raw(capsys: pytest.CaptureFixture[str]) -> None:
    # Documented: to a file or pipe the text goes as it is; the probe's bytes arrive.
    assert in_sandbox(Hardened)(print_escapes) == OK
    assert "\x1b]0;owned\x07" in capsys.readouterr().out


# -- descriptors passed to the caller --------------------------------------------------------


def pass_descriptors(n: int) -> str:
    """An OUTPUT frame that carries ``n`` descriptors (of /dev/null) as SCM_RIGHTS."""
    from sandboxed.wire.framing import FrameType, send_frame

    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(n)]
    try:
        return attempt(
            lambda: send_frame(channel(), FrameType.OUTPUT, [b"stdout", b"fds\n"], fds=fds)
        )
    finally:
        for fd in fds:
            os.close(fd)


def test_redteam_descriptors_passed_by_the_worker_do_not_reach_the_caller() -> None:
    fn = in_sandbox(Hardened)
    fn(os.getpid)  # warm: the unit and its channels exist before counting
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert fn(pass_descriptors, 64) == OK  # control: the descriptors were sent
    assert len(os.listdir("/proc/self/fd")) <= before


# -- leftovers after a successful untrusted call: a daemon that changes its PID ---------------


def spawn_hopper() -> str:
    """A double-forked, setsid daemon that forks a new process every 20 ms (each new PID
    replacing the old, so that a reaper working from a list of PIDs is always behind),
    each recording its PID in /tmp."""
    import time

    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for _ in range(3000):
                if os.fork():
                    os._exit(0)
                with open("/tmp/redteam-hopper", "a") as f:
                    f.write(f"{os.getpid()}\n")
                time.sleep(0.02)
        os._exit(0)
    os.wait()
    time.sleep(0.2)  # a few hops while the call still runs
    return OK


def hoppers_alive(wait: float) -> list[int]:
    """The recorded PIDs still alive (signal 0: same uid), once none is or after ``wait``."""
    import time

    end = time.monotonic() + wait
    while True:
        with open("/tmp/redteam-hopper") as f:
            pids = [int(x) for x in f.read().split()]
        live = []
        for pid in pids[-50:]:
            with contextlib.suppress(OSError):
                os.kill(pid, 0)
                live.append(pid)
        if not live or time.monotonic() > end:
            return live
        time.sleep(0.1)


def test_redteam_a_pid_hopping_daemon_does_not_outlive_an_untrusted_call() -> None:
    fn = in_sandbox(Hardened)
    try:
        assert fn(spawn_hopper) == OK
        assert fn(hoppers_alive, 3.0) == []
    finally:
        fn.sandbox.shutdown()


def test_redteam_control_the_daemon_outlives_a_trusted_call() -> None:
    # Documented: a successful trusted call's children keep running.
    fn = in_sandbox(NoNetwork, PrivateTmp=True, User="nobody")
    try:
        assert fn(spawn_hopper) == OK
        assert fn(hoppers_alive, 0.0) != []
    finally:
        fn.sandbox.shutdown()
