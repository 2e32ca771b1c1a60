"""A worker: the process forked for one caller's socket, which runs the calls.

It serves CALL frames on its own socket, forwards the call's stdout, stderr and
log records to the caller as OUTPUT and LOG frames, and answers with RESULT or
ERROR. Imported in the sandbox before any user code: stdlib and
:mod:`sandboxed.wire` only.
"""

from __future__ import annotations

import io
import os
import select
import socket
import sys
import threading

from sandboxed.wire import codec, frames
from sandboxed.wire.framing import FrameType, recv_frame, send_frame
from sandboxed.worker._util import suppress as _suppress

TYPE_CHECKING = False  # typing stays out of the unit's start-up
if TYPE_CHECKING:
    from typing import Any


class _Frames(io.RawIOBase):
    """The raw stream under a worker's ``sys.stdout``/``sys.stderr``: each write is sent
    as OUTPUT frames at once, from the writing thread."""

    def __init__(self, output: _Output, name: bytes, fd: int) -> None:
        super().__init__()
        self._output = output
        self._name = name
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if view.nbytes:
            self._output.send(self._name, view)
        return view.nbytes


class _Output:
    """Forward what the worker prints as OUTPUT frames, in order, losing nothing.

    ``sys.stdout`` and ``sys.stderr`` write through to the channel: a write is sent
    by the thread that makes it before it returns, so output written just before the
    worker dies (``os._exit``, a segfault, an OOM kill) is already on its way, and
    stdout and stderr arrive in the order they were written. What is written to
    fds 1 and 2 directly (C code, child processes) goes through pipes, drained
    before each frame (so it keeps its place) and by a pump thread; the supervisor
    holds their read ends too and forwards what a dead worker left in them. When a
    call ends the worker drains them under the send lock and then sends the result,
    so nothing printed can overtake or trail its result.
    """

    CHUNK = 1 << 20

    def __init__(self, sock: socket.socket, lock: Any, pipes: Any = None) -> None:
        self.sock = sock
        self.lock = lock
        self.pipes: dict[int, bytes] = {}
        pipes = pipes or (os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC))
        for fd, name, (r, w) in ((1, b"stdout", pipes[0]), (2, b"stderr", pipes[1])):
            os.set_blocking(r, False)
            os.dup2(w, fd)
            os.close(w)
            self.pipes[r] = name
        self.poller = select.poll()
        for r in self.pipes:
            self.poller.register(r, select.POLLIN)
        for fd, name, attr in ((1, b"stdout", "stdout"), (2, b"stderr", "stderr")):
            stream = io.TextIOWrapper(
                _Frames(self, name, fd),  # type: ignore[type-var]
                encoding="utf-8",
                errors="backslashreplace",
                write_through=True,
            )
            setattr(sys, attr, stream)
        threading.Thread(target=self._pump, name="sandboxed-output", daemon=True).start()

    def send(self, name: bytes, data: memoryview) -> None:
        with self.lock:
            self._drain_ready()
            for start in range(0, data.nbytes, self.CHUNK):
                send_frame(self.sock, FrameType.OUTPUT, [name, data[start : start + self.CHUNK]])

    def _pump(self) -> None:
        while True:
            ready, _, _ = select.select(list(self.pipes), [], [])
            with self.lock:
                self._drain(ready)

    def _drain(self, fds: list[int]) -> None:
        for r in fds:
            while True:
                try:
                    data = os.read(r, 1 << 16)
                except BlockingIOError:
                    break
                if not data:
                    break
                send_frame(self.sock, FrameType.OUTPUT, [self.pipes[r], data])

    def _drain_ready(self) -> None:
        # One poll rather than a failing read per pipe: usually nothing was written there.
        ready = [fd for fd, _ in self.poller.poll(0)]
        if ready:
            self._drain(ready)

    def flush_locked(self) -> None:
        """With the send lock held: forward everything printed so far."""
        for stream in (sys.stdout, sys.stderr):
            with _suppress(OSError, ValueError):
                stream.flush()
        self._drain_ready()


class _Logs:
    """Send the worker's log records to the caller, as plain data.

    ``logging`` costs a cold start ~10 ms to import, and most calls never log:
    the handler is installed when (if) the call's code imports ``logging``,
    through a one-shot import hook, so no record is missed.
    """

    WARNING = 30
    MAX_TEXT = 60 * 1024

    def __init__(self, sock: socket.socket, lock: Any) -> None:
        self.sock = sock
        self.lock = lock
        self.level = self.WARNING
        self.root: Any = None
        if "logging" in sys.modules:
            self._install(sys.modules["logging"])
        else:
            sys.meta_path.insert(0, self)

    def set_level(self, level: int) -> None:
        self.level = level
        if self.root is not None and self.root.level != level:
            self.root.setLevel(level)  # clears every logger's cache: only when it changes

    # -- the import hook (importlib's MetaPathFinder protocol) ---------------------------

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_install(module: Any) -> None:
            exec_module(module)
            self._install(module)

        spec.loader.exec_module = exec_then_install  # type: ignore[method-assign]
        return spec

    def _install(self, logging: Any) -> None:
        logs = self

        class Handler(logging.Handler):  # type: ignore[misc]
            def emit(self, record: Any) -> None:
                try:
                    exc_text = None
                    if record.exc_info:
                        exc_text = logging.Formatter().formatException(record.exc_info)
                    data = {name: getattr(record, name, None) for name in frames.LOG_FIELDS}
                    msg = record.getMessage()
                    # The caller keeps 64 KiB of each: cut ours before that, saying so.
                    if len(msg) > logs.MAX_TEXT:
                        msg = msg[: logs.MAX_TEXT] + f" [... {len(msg) - logs.MAX_TEXT} more]"
                    if exc_text is not None and len(exc_text) > logs.MAX_TEXT:
                        exc_text = exc_text[-logs.MAX_TEXT :]
                    data["msg"] = msg
                    data["exc_text"] = exc_text
                    with logs.lock:
                        send_frame(logs.sock, FrameType.LOG, [codec.encode(data)])
                except Exception:
                    self.handleError(record)

        root = logging.getLogger()
        root.handlers[:] = [Handler()]
        root.setLevel(self.level)
        self.root = root


class FunctionCache:
    """The by-value functions this worker received, by digest (least recently used out).

    The caller keeps the same account of it (``runtime.channel.ShippedFunctions``), so
    an entry dropped here is shipped again rather than asked for. Nothing here is trusted
    by the caller: a worker that loses or denies an entry only makes it send it again.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.fns: dict[bytes, Any] = {}

    def get(self, digest: bytes) -> Any:
        fn = self.fns.pop(digest, None)
        if fn is not None:
            self.fns[digest] = fn
        return fn

    def put(self, digest: bytes, fn: Any) -> None:
        self.fns.pop(digest, None)
        self.fns[digest] = fn
        while len(self.fns) > self.size:
            del self.fns[next(iter(self.fns))]

    def clear(self) -> None:
        self.fns.clear()


FUNCTIONS = FunctionCache(frames.FUNCTION_CACHE_SIZE)


def serve(sock: socket.socket, pipes: Any = None) -> None:
    """Serve calls on ``sock`` until the caller closes it (``pipes``: the (read, write)
    pairs of the pipes that become fds 1 and 2; the supervisor keeps their read ends)."""
    from sandboxed import _context
    from sandboxed.wire import serial
    from sandboxed.worker import isolation

    _context.IN_WORKER = True
    # Reentrant: flushing a stream under the lock may write through to _Output.send.
    lock = threading.RLock()

    def send_partial(index: int, ok: bool, parts: Any) -> None:
        with lock:
            output.flush_locked()
            send_frame(sock, FrameType.PARTIAL, [frames.pack(FrameType.PARTIAL, index, ok), *parts])

    _context.send_partial = send_partial
    # Nothing may write into the protocol stream but us.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    output = _Output(sock, lock, pipes)
    logs = _Logs(sock, lock)
    raw_header = b""
    header: dict[str, Any] = {}
    while True:
        try:
            kind, flags, parts = recv_frame(sock)
        except EOFError:
            return
        if kind != FrameType.CALL:
            continue
        fn = None
        apart = flags & frames.FUNCTION_APART
        if apart:
            digest = bytes(parts[1])
            if not parts[2]:
                fn = FUNCTIONS.get(digest)
                if fn is None:
                    with lock:
                        send_frame(sock, FrameType.UNKNOWN_FUNCTION, [digest])
                    continue
            del parts[1]  # [header, function stream, call stream, *buffers]
        # Callers send the same few header bytes call after call: decode them once.
        if parts[0] != raw_header:
            decoded = codec.decode(parts[0])
            assert isinstance(decoded, dict)
            header, raw_header = decoded, bytes(parts[0])
        safe = bool(header.get("safe"))
        logs.set_level(int(header.get("log_level", _Logs.WARNING)))
        ok = True
        try:
            if safe and isolation.problem is not None:
                # Untrusted code in a unit whose calls could read each other's memory:
                # refused, rather than run in a weaker sandbox than promised.
                raise IsolationError(isolation.problem)
            if apart:
                if fn is None:
                    fn = serial.loads_function(parts[1])
                    FUNCTIONS.put(digest, fn)
                fn, args, kwargs = serial.loads_call(parts[2], parts[3:], fn=fn)
            else:
                fn, args, kwargs = serial.loads_call(parts[1], parts[2:])
            if header.get("ack"):
                # The caller's timeout counts from here: imports and unpickling don't.
                with lock:
                    send_frame(sock, FrameType.STARTED, [])
            value = fn(*args, **kwargs)
            if _is_awaitable(value):
                import asyncio

                value = asyncio.run(_await(value))
        except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt go back too
            ok = False
            value = e
            # The user's traceback starts in their function, not in this loop.
            if e.__traceback__ is not None and e.__traceback__.tb_next is not None:
                e.__traceback__ = e.__traceback__.tb_next
        try:
            out = (
                serial.dumps_result(value, safe=safe)
                if ok
                else serial.dumps_exception(value, safe=safe)  # type: ignore[arg-type]
            )
        except BaseException as e:  # noqa: BLE001
            ok = False
            out = serial.dumps_exception(e, safe=safe)
        if not ok:
            # A failed call leaves nothing running (a timed-out one is ended by the
            # supervisor, with its worker).
            isolation.end_children()
        with lock:
            output.flush_locked()
            send_frame(sock, FrameType.RESULT if ok else FrameType.ERROR, out)
        del value, out, fn
    del logs


class IsolationError(RuntimeError):
    """This unit cannot keep calls apart, so it refuses untrusted ones."""


def _is_awaitable(value: object) -> bool:
    # inspect costs ~10 ms to import: only a value that might be awaitable needs it.
    if not hasattr(type(value), "__await__") and type(value).__name__ != "generator":
        return False
    import inspect

    return inspect.isawaitable(value)


async def _await(value: Any) -> Any:
    return await value
