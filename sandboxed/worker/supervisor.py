"""The unit's main process: a small single-threaded supervisor that forks workers.

For each ``SPAWN`` frame on the control socket it receives a socket
(SCM_RIGHTS) and forks a worker (:mod:`sandboxed.worker.serve`) that serves
calls on it, reports ``SPAWNED``/``EXITED`` (with the wait status, so a segfault
or an OOM kill is reported as such) and kills workers on ``KILL``. It is
single-threaded, so forking is safe, and it exits (taking the unit and every
worker with it) as soon as the caller's end of the control socket closes: a
caller killed with SIGKILL leaves nothing running.

It never runs user code, and before its first fork it makes itself non-dumpable
and the subreaper of whatever its workers start (:mod:`sandboxed.worker.isolation`):
no call can read or write its memory or another call's, and when a worker is gone
the supervisor ends everything the worker's calls left running, before it reports
``EXITED``.

Imported in the sandbox before any user code: stdlib and :mod:`sandboxed.wire` only.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

from sandboxed._errors import ProtocolError
from sandboxed.wire import codec, frames
from sandboxed.wire.framing import FrameType, recv_frame_with_fds, send_frame
from sandboxed.worker import isolation
from sandboxed.worker._util import suppress as _suppress
from sandboxed.worker.serve import serve

TYPE_CHECKING = False  # typing stays out of the unit's start-up
if TYPE_CHECKING:
    from typing import Any


def _info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }


# -- supervisor ------------------------------------------------------------------------------


def supervise(ctl: socket.socket, guard_spec: str = "") -> None:
    """Serve the control socket until the caller closes it.

    ``guard_spec`` is what :func:`sandboxed.worker.guard.lock_down` must check and
    install before anything else; if it fails, the supervisor says why on stderr
    (the caller's diagnostics) and exits without serving.
    """
    if guard_spec:
        from sandboxed.worker import guard

        try:
            guard.lock_down(guard_spec)
        except (guard.GuardError, OSError) as e:
            sys.stderr.write(f"sandboxed: refusing to serve: {e}\n")
            sys.stderr.flush()
            os._exit(frames.GUARD_REFUSED_EXIT)
    children: dict[int, int] = {}  # pid -> worker id
    # pid -> read ends of the worker's stdout/stderr pipes: what it wrote to fds 1 and 2
    # just before it died is forwarded from here, before its EXITED.
    outputs: dict[int, tuple[int, int]] = {}
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Termination by systemd (unit stop) must take the workers along.
    signal.signal(signal.SIGTERM, lambda *_: _terminate(children))
    send_frame(ctl, FrameType.READY, [codec.encode(_info())])
    # What every worker needs, imported once here (while the caller handles READY) rather
    # than after each fork; forked workers share these pages.
    from sandboxed import _context  # noqa: F401
    from sandboxed.wire import serial  # noqa: F401

    # Before the first fork: no call may read another's memory or ours, and whatever a
    # call leaves running comes back to us when its worker is gone.
    isolation.protect_supervisor()

    while True:
        waitables: list[Any] = [ctl, rfd]
        ready, _, _ = select.select(waitables, [], [])
        if rfd in ready:
            try:
                while os.read(rfd, 512):
                    pass
            except BlockingIOError:
                pass
            _reap(ctl, children, outputs)
        if ctl in ready:
            try:
                kind, parts, fds = recv_frame_with_fds(ctl)
            except (EOFError, OSError):
                _terminate(children)
                os._exit(0)
            if kind == FrameType.SPAWN:
                wid = int(bytes(parts[0]).decode())
                if len(fds) != 1:
                    send_frame(
                        ctl, FrameType.FAILED, [codec.encode(f"SPAWN {wid} without a socket")]
                    )
                    for fd in fds:
                        os.close(fd)
                    continue
                pipes = (os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC))
                pid = os.fork()
                if pid == 0:
                    try:
                        isolation.protect_worker()
                        os.close(rfd)
                        os.close(wfd)
                        for other in outputs.values():
                            for fd in other:
                                os.close(fd)
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        ctl.close()
                        serve(socket.socket(fileno=fds[0]), pipes)
                    finally:
                        os._exit(0)
                os.close(fds[0])
                for r, w in pipes:
                    os.close(w)
                    os.set_blocking(r, False)
                outputs[pid] = (pipes[0][0], pipes[1][0])
                children[pid] = wid
                send_frame(ctl, FrameType.SPAWNED, [frames.pack(FrameType.SPAWNED, wid, pid)])
            elif kind == FrameType.ENV:
                # env= values: here rather than in Environment=, which every unit can read.
                for name, value in zip(parts[::2], parts[1::2], strict=False):
                    os.environ[bytes(name).decode()] = bytes(value).decode()
            elif kind == FrameType.KILL:
                try:
                    wid, sig = frames.unpack(FrameType.KILL, parts[0])
                except ProtocolError:
                    continue
                for pid, w in children.items():
                    if w == wid:
                        with _suppress(ProcessLookupError):
                            os.kill(pid, int(sig))
            else:
                for fd in fds:
                    os.close(fd)


def _reap(
    ctl: socket.socket, children: dict[int, int], outputs: dict[int, tuple[int, int]]
) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        wid = children.pop(pid, None)
        # What the worker's calls left running came to us (we are their subreaper): end
        # it before the caller hears that the worker is gone. An orphan we ended leaves
        # its own children to us in turn: they are ended when it is reaped.
        isolation.sweep(children)
        with _suppress(OSError):
            _last_words(ctl, outputs.pop(pid, ()))
        if wid is not None:
            with _suppress(OSError):
                send_frame(ctl, FrameType.EXITED, [frames.pack(FrameType.EXITED, wid, pid, status)])


LAST_WORDS = 1 << 20
"""At most this much of what a dead worker left in each pipe is forwarded: a process of
its that outlived it could otherwise keep the supervisor reading forever."""


def _last_words(ctl: socket.socket, fds: tuple[int, ...]) -> None:
    """Forward what a dead worker left in its stdout/stderr pipes, then close them."""
    for fd, name in zip(fds, (b"stdout", b"stderr"), strict=False):
        left = LAST_WORDS
        try:
            while left > 0:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not data:
                    break
                left -= len(data)
                send_frame(ctl, FrameType.OUTPUT, [name, data])
        finally:
            os.close(fd)


def _terminate(children: dict[int, int]) -> None:
    for pid in list(children):
        with _suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    isolation.sweep(())
    os._exit(0)
