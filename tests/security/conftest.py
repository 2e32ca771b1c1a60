"""Fixtures of the escape suite: bait the host offers to a sandbox, and a real systemd.

Every server here listens on the host's loopback only (127.0.0.0/8 or an
abstract Unix socket), records what reaches it, and stops itself after
``BAIT_SECONDS`` even if a test forgets it. Nothing in this suite ever
addresses a non-loopback host.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escape_kit import DNS_ADDRESS

#: How long a bait server lives at most, whatever the test does.
BAIT_SECONDS = 120.0


@pytest.fixture(autouse=True, scope="session")
def _real_systemd(systemd: Any) -> Any:
    """Every test here runs against a real manager (the host's or the embedded one)."""
    return systemd


class Bait:
    """A loopback server: ``address`` to attack, ``hits`` what reached it."""

    def __init__(self, address: Any) -> None:
        self.address = address
        self.hits: list[bytes] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, serve: Any) -> None:
        deadline = time.monotonic() + BAIT_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, BlockingIOError, OSError):
                serve()


def _start(bait: Bait, sock: socket.socket, stream: bool) -> Bait:
    sock.settimeout(0.2)

    def serve() -> None:
        if stream:
            conn, _ = sock.accept()
            with conn:
                conn.settimeout(1.0)
                bait.hits.append(b"connected:" + conn.recv(256))
                conn.sendall(b"host says hello")
        else:
            data, peer = sock.recvfrom(2048)
            bait.hits.append(data)
            sock.sendto(b"host says hello", peer)

    def run() -> None:
        try:
            bait._run(serve)
        finally:
            sock.close()

    threading.Thread(target=run, name=f"bait-{bait.address}", daemon=True).start()
    return bait


@pytest.fixture(scope="module")
def tcp_bait() -> Iterator[Bait]:
    """A TCP server on the host's 127.0.0.1; ``address`` is (host, port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    bait = _start(Bait(s.getsockname()), s, stream=True)
    yield bait
    bait.stop()


@pytest.fixture(scope="module")
def udp_bait() -> Iterator[Bait]:
    """A UDP server on the host's 127.0.0.1; ``address`` is (host, port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    bait = _start(Bait(s.getsockname()), s, stream=False)
    yield bait
    bait.stop()


@pytest.fixture(scope="module")
def abstract_bait() -> Iterator[Bait]:
    """A stream server on an abstract Unix socket of the host; ``address`` is its name."""
    name = b"\0sandboxed-escape-" + secrets.token_hex(6).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(name)
    s.listen(8)
    bait = _start(Bait(name), s, stream=True)
    yield bait
    bait.stop()


@pytest.fixture(scope="module")
def dns_bait() -> Iterator[tuple[Bait, Path]]:
    """A fake DNS server on 127.53.53.53:53 and a resolv.conf naming only it.

    Sandboxes under test get that resolv.conf bind-mounted over /etc/resolv.conf,
    so that a resolver that escapes the sandbox still talks to this loopback
    server and never to the machine's real one.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((DNS_ADDRESS, 53))
    except OSError as e:
        s.close()
        pytest.skip(f"cannot run a fake DNS server on {DNS_ADDRESS}:53: {e}")
    bait = _start(Bait((DNS_ADDRESS, 53)), s, stream=False)
    d = Path(tempfile.mkdtemp(prefix="sandboxed-dns-"))
    d.chmod(0o755)
    conf = d / "resolv.conf"
    conf.write_text(f"nameserver {DNS_ADDRESS}\noptions timeout:1 attempts:1\n")
    conf.chmod(0o644)
    yield bait, conf
    bait.stop()
    conf.unlink()
    d.rmdir()


@pytest.fixture(scope="session")
def root_only_file() -> Iterator[Path]:
    """A file only root may read, outside /tmp (so PrivateTmp= does not hide it)."""
    d = Path(tempfile.mkdtemp(prefix="sandboxed-secret-", dir="/var/lib"))
    d.chmod(0o755)
    f = d / "secret"
    f.write_text("root's secret\n")
    f.chmod(0o600)
    yield f
    f.unlink()
    d.rmdir()
