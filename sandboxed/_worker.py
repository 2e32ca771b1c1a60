"""The process systemd starts as a sandbox unit's main process, and the workers it forks.

systemd starts ``python -m sandboxed._worker`` itself, so every directive of
the unit applies to it by construction (DESIGN.md). Its standard input and
output are the *control* socket; its standard error a diagnostics socket the
caller reads only when start-up fails.

The main process is a small supervisor: for each ``SPAWN`` frame it receives
a socket (SCM_RIGHTS) and forks a worker that serves calls on it, reports
``SPAWNED``/``EXITED`` (with the wait status, so a segfault or an OOM kill is
reported as such) and kills workers on ``KILL``. It is single-threaded, so
forking is safe, and it exits (taking the unit and every worker with it) as
soon as the caller's end of the control socket closes: a caller killed with
SIGKILL leaves nothing running.

This module is imported in the sandbox before any user code: keep its
imports small, the sandbox's start-up time depends on them.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading

from sandboxed import _codec
from sandboxed._framing import Kind, recv_frame, recv_frame_with_fds, send_frame


class _suppress:
    """contextlib.suppress without importing contextlib (functools, collections...)
    into the unit's start-up."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return kind is not None and issubclass(kind, self.kinds)  # type: ignore[arg-type]


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


def supervise(ctl: socket.socket) -> None:
    """Serve the control socket until the caller closes it."""
    children: dict[int, int] = {}  # pid -> worker id
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Termination by systemd (unit stop) must take the workers along.
    signal.signal(signal.SIGTERM, lambda *_: _terminate(children))
    send_frame(ctl, Kind.READY, [_codec.encode(_info())])
    # What every worker needs, imported once here (while the caller handles READY) rather
    # than after each fork; forked workers share these pages.
    from sandboxed import _context, _serial  # noqa: F401

    while True:
        waitables: list[Any] = [ctl, rfd]
        ready, _, _ = select.select(waitables, [], [])
        if rfd in ready:
            try:
                while os.read(rfd, 512):
                    pass
            except BlockingIOError:
                pass
            _reap(ctl, children)
        if ctl in ready:
            try:
                kind, parts, fds = recv_frame_with_fds(ctl)
            except (EOFError, OSError):
                _terminate(children)
                os._exit(0)
            if kind == Kind.SPAWN:
                wid = int(bytes(parts[0]).decode())
                if len(fds) != 1:
                    send_frame(ctl, Kind.FAILED, [_codec.encode(f"SPAWN {wid} without a socket")])
                    for fd in fds:
                        os.close(fd)
                    continue
                pid = os.fork()
                if pid == 0:
                    try:
                        os.close(rfd)
                        os.close(wfd)
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        ctl.close()
                        serve(socket.socket(fileno=fds[0]))
                    finally:
                        os._exit(0)
                os.close(fds[0])
                children[pid] = wid
                send_frame(ctl, Kind.SPAWNED, [_codec.encode((wid, pid))])
            elif kind == Kind.KILL:
                decoded = _codec.decode(parts[0])
                if not isinstance(decoded, tuple) or len(decoded) != 2:
                    continue
                wid, sig = decoded
                for pid, w in children.items():
                    if w == wid:
                        with _suppress(ProcessLookupError):
                            os.kill(pid, int(sig))
            else:
                for fd in fds:
                    os.close(fd)


def _reap(ctl: socket.socket, children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        wid = children.pop(pid, None)
        if wid is not None:
            with _suppress(OSError):
                send_frame(ctl, Kind.EXITED, [_codec.encode((wid, pid, status))])


def _terminate(children: dict[int, int]) -> None:
    for pid in list(children):
        with _suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(0)


# -- worker ----------------------------------------------------------------------------------


class _Output:
    """Forward what is written to fds 1 and 2 (Python and C level) as OUTPUT frames.

    The pump reads a pipe only while it holds the send lock, so when a call ends
    the worker can drain both pipes and send the result after everything the
    call printed: nothing printed can overtake or trail its result.
    """

    def __init__(self, sock: socket.socket, lock: threading.Lock) -> None:
        self.sock = sock
        self.lock = lock
        self.pipes: dict[int, bytes] = {}
        for fd, name in ((1, b"stdout"), (2, b"stderr")):
            r, w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(r, False)
            os.dup2(w, fd)
            os.close(w)
            self.pipes[r] = name
        self.poller = select.poll()
        for r in self.pipes:
            self.poller.register(r, select.POLLIN)
        text = {"buffering": 1, "encoding": "utf-8", "errors": "backslashreplace"}
        sys.stdout = open(1, "w", closefd=False, **text)  # type: ignore[call-overload]  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, **text)  # type: ignore[call-overload]  # noqa: SIM115
        threading.Thread(target=self._pump, name="sandboxed-output", daemon=True).start()

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
                send_frame(self.sock, Kind.OUTPUT, [self.pipes[r], data])

    def flush_locked(self) -> None:
        """With the send lock held: forward everything printed so far."""
        for stream in (sys.stdout, sys.stderr):
            with _suppress(OSError, ValueError):
                stream.flush()
        # One poll rather than a failing read per pipe: usually nothing was printed.
        ready = [fd for fd, _ in self.poller.poll(0)]
        if ready:
            self._drain(ready)


class _Logs:
    """Send the worker's log records to the caller, as plain data.

    ``logging`` costs a cold start ~10 ms to import, and most calls never log:
    the handler is installed when (if) the call's code imports ``logging``,
    through a one-shot import hook, so no record is missed.
    """

    WARNING = 30

    def __init__(self, sock: socket.socket, lock: threading.Lock) -> None:
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
                    data = {
                        "name": record.name,
                        "levelno": record.levelno,
                        "levelname": record.levelname,
                        "msg": record.getMessage(),
                        "pathname": record.pathname,
                        "filename": record.filename,
                        "module": record.module,
                        "lineno": record.lineno,
                        "funcName": record.funcName,
                        "created": record.created,
                        "msecs": record.msecs,
                        "process": record.process,
                        "threadName": record.threadName,
                        "exc_text": exc_text,
                    }
                    with logs.lock:
                        send_frame(logs.sock, Kind.LOG, [_codec.encode(data)])
                except Exception:
                    self.handleError(record)

        root = logging.getLogger()
        root.handlers[:] = [Handler()]
        root.setLevel(self.level)
        self.root = root


def serve(sock: socket.socket) -> None:
    """Serve calls on ``sock`` until the caller closes it."""
    from sandboxed import _context, _serial

    _context.IN_WORKER = True
    lock = threading.Lock()

    def send_partial(index: int, ok: bool, parts: Any) -> None:
        with lock:
            output.flush_locked()
            send_frame(sock, Kind.PARTIAL, [_codec.encode((index, ok)), *parts])

    _context.send_partial = send_partial
    # Nothing may write into the protocol stream but us.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    output = _Output(sock, lock)
    logs = _Logs(sock, lock)
    raw_header = b""
    header: dict[str, Any] = {}
    while True:
        try:
            kind, _flags, parts = recv_frame(sock)
        except EOFError:
            return
        if kind != Kind.CALL:
            continue
        # Callers send the same few header bytes call after call: decode them once.
        if parts[0] != raw_header:
            decoded = _codec.decode(parts[0])
            assert isinstance(decoded, dict)
            header, raw_header = decoded, bytes(parts[0])
        safe = bool(header.get("safe"))
        logs.set_level(int(header.get("log_level", _Logs.WARNING)))
        ok = True
        try:
            fn, args, kwargs = _serial.loads_call(parts[1], parts[2:])
            if header.get("ack"):
                # The caller's timeout counts from here: imports and unpickling don't.
                with lock:
                    send_frame(sock, Kind.STARTED, [])
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
                _serial.dumps_result(value, safe=safe)
                if ok
                else _serial.dumps_exception(value, safe=safe)  # type: ignore[arg-type]
            )
        except BaseException as e:  # noqa: BLE001
            ok = False
            out = _serial.dumps_exception(e, safe=safe)
        with lock:
            output.flush_locked()
            send_frame(sock, Kind.RESULT if ok else Kind.ERROR, out)
        del value, out
    del logs


def _is_awaitable(value: object) -> bool:
    # inspect costs ~10 ms to import: only a value that might be awaitable needs it.
    if not hasattr(type(value), "__await__") and type(value).__name__ != "generator":
        return False
    import inspect

    return inspect.isawaitable(value)


async def _await(value: Any) -> Any:
    return await value


def _complete_package_lazily() -> None:
    """Run the package's ``__init__`` (skipped by the boot) on first use of a public name."""
    pkg = sys.modules.get("sandboxed")
    if pkg is None or "__all__" in vars(pkg):
        return

    def __getattr__(name: str) -> Any:  # noqa: N807 - PEP 562
        # Submodules import themselves (``from sandboxed import _serial`` asks here first).
        if name.startswith("_") and name != "__all__":
            raise AttributeError(name)
        del vars(pkg)["__getattr__"]
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "sandboxed", pkg.__file__, submodule_search_locations=list(pkg.__path__)
        )
        try:
            assert spec is not None and spec.loader is not None
            pkg.__spec__ = spec
            spec.loader.exec_module(pkg)
        except BaseException:
            vars(pkg)["__getattr__"] = __getattr__
            raise
        return getattr(pkg, name)

    vars(pkg)["__getattr__"] = __getattr__


def site(setup: str) -> None:
    """Redo what ``site`` did in the caller (the unit's interpreter runs with ``-S``).

    ``setup`` is hex of NUL-separated fields: flags ("s" sitecustomize, "u"
    usercustomize), then the .pth import lines (see ``_sandbox._site_setup``).
    """
    import _sitebuiltins
    import builtins

    flags, *lines = bytes.fromhex(setup).decode().split("\0")
    for line in lines:
        # What site.addpackage does with a .pth file's import lines, failures ignored too.
        with _suppress(Exception):
            exec(line)
    for flag, name in (("s", "sitecustomize"), ("u", "usercustomize")):
        if flag in flags:
            with _suppress(ImportError):
                __import__(name)
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")


def main() -> None:
    _complete_package_lazily()
    ctl = socket.socket(fileno=os.dup(0))
    ctl.set_inheritable(False)
    # fd 0 and 1 were the control socket; make sure nothing else writes there.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    supervise(ctl)


if __name__ == "__main__":
    main()
