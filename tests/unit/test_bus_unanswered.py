"""A manager that does not answer is a ManagerError saying which call (issue 16), and a
connection it drops is known as lost before any call learns it (issue 15).

A fake bus peer (a socket that authenticates, answers ``Hello`` and then stays
silent, or answers ``NoReply`` as dbus-daemon does when systemd is too slow)
stands in for a hung manager: the point is the client's error, not systemd.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jeepney import (
    DBusAddress,
    HeaderFields,
    MessageType,
    new_error,
    new_method_call,
    new_method_return,
)
from jeepney.low_level import Parser

from sandboxed import ManagerError
from sandboxed.systemd.bus import Connection


def _serve(server: socket.socket) -> None:
    conn, _ = server.accept()
    buf = b""
    while b"BEGIN\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk
        if b"AUTH" in chunk:
            conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        if b"NEGOTIATE_UNIX_FD" in chunk:
            conn.sendall(b"AGREE_UNIX_FD\r\n")
    parser = Parser()
    parser.add_data(buf.split(b"BEGIN\r\n", 1)[1])
    serial = 1000
    while True:
        while (msg := parser.get_next_message()) is not None:
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            reply = None
            if member == "Hello":
                reply = new_method_return(msg, "s", (":1.42",))
            elif member == "Drop":  # what a re-exec does to a peer-to-peer connection
                conn.close()
                return
            elif member == "AnswerNoReply":
                reply = new_error(
                    msg, "org.freedesktop.DBus.Error.NoReply", "s", ("Did not receive a reply",)
                )
            if reply is not None:
                serial += 1
                conn.sendall(reply.serialise(serial=serial))
        data = conn.recv(4096)
        if not data:
            return
        parser.add_data(data)


@pytest.fixture
def silent_bus(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "bus")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    t = threading.Thread(target=_serve, args=(server,), daemon=True)
    t.start()
    yield f"unix:path={path}"
    server.close()


def _call(member: str) -> object:
    return new_method_call(
        DBusAddress("/org/freedesktop/systemd1", "org.freedesktop.systemd1", "x.Manager"), member
    )


def test_a_call_the_manager_never_answers_is_a_manager_error_naming_it(silent_bus: str) -> None:
    conn = Connection(silent_bus, timeout=5)
    try:
        with pytest.raises(ManagerError) as info:
            conn.call(_call("StartTransientUnit"), timeout=0.3)  # type: ignore[arg-type]
        assert "did not answer StartTransientUnit()" in str(info.value)
    finally:
        conn.close()


def test_a_no_reply_error_from_the_bus_says_which_call_went_unanswered(silent_bus: str) -> None:
    conn = Connection(silent_bus, timeout=5)
    try:
        with pytest.raises(ManagerError) as info:
            conn.call(_call("AnswerNoReply"), timeout=5)  # type: ignore[arg-type]
        assert "did not answer AnswerNoReply() in time" in str(info.value)
    finally:
        conn.close()


def test_a_dropped_connection_is_announced_before_the_calls_it_failed_wake(
    silent_bus: str,
) -> None:
    # A start that fails as a re-exec drops the connection is retried only if the
    # loss (runtime.client's generation) is known by the time the failed call returns.
    from sandboxed._errors import ConnectionLost

    conn = Connection(silent_bus, timeout=5)
    announced = threading.Event()

    def on_message(msg: object) -> None:
        if msg is None:
            time.sleep(0.3)  # a slow listener: the failed call must still wait for it
            announced.set()

    conn.add_listener(on_message)
    try:
        with pytest.raises(ConnectionLost):
            conn.call(_call("Drop"), timeout=5)  # type: ignore[arg-type]
        assert announced.is_set()
    finally:
        conn.close()
