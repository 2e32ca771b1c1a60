"""A sandbox: one transient unit for one option set, and the workers inside it.

The unit's main process is the supervisor of :mod:`sandboxed._worker`, which
systemd starts with our control socket as its stdin/stdout. Each worker gets
its own socket (passed to the supervisor with SCM_RIGHTS), so a call talks to
its worker directly: no relay, no thread hop. The calling thread does its own
I/O, which keeps a warm call to a single ``sendmsg`` and a few ``recv``s.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import secrets
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sandboxed import _codec, _serial
from sandboxed._errors import (
    ManagerError,
    PayloadTooLargeError,
    ResourceLimitError,
    SandboxMemoryError,
    SandboxTimeoutError,
    UnitFailedError,
    WorkerDiedError,
)
from sandboxed._framing import DEFAULT_LIMIT, Kind, ProtocolError, recv_frame, send_frame
from sandboxed._stats import CallStats, CgroupProbe
from sandboxed._unitprops import check_module, directive_value, unit_plan

WORKER_MODULES = ("_worker", "_framing", "_codec", "_serial", "_batch", "_context", "_errors")
_bytecode_checked = False


def _ensure_bytecode() -> None:
    """Compile the modules every worker imports, if their bytecode is missing or stale.

    The unit's interpreter runs with -B, usually on a read-only file system, and
    often as another user: it cannot cache bytecode, so without this each cold
    start would compile them from source again (some 20 ms). PYTHONDONTWRITEBYTECODE
    in the caller's environment would otherwise leave them uncompiled for good.
    """
    global _bytecode_checked
    if _bytecode_checked:
        return
    _bytecode_checked = True
    import importlib.util
    import py_compile

    here = os.path.dirname(os.path.abspath(__file__))
    for name in WORKER_MODULES:
        src = os.path.join(here, name + ".py")
        try:
            cached = importlib.util.cache_from_source(src)
            if os.path.exists(cached) and os.stat(cached).st_mtime >= os.stat(src).st_mtime:
                continue
            py_compile.compile(src, cfile=cached, doraise=True)
        except (OSError, py_compile.PyCompileError, NotImplementedError):
            return  # not writable (a system install is compiled already): nothing to do


# The package is registered without running its __init__ (the caller's side: decorator,
# asyncio, wrapt... ~200 ms); _worker completes it when user code asks for a public name.
# The unit's interpreter starts with nothing imported (-S): set sys.path from hex
# (no json, no base64 to import), register the package without running its
# __init__ (the caller side: wrapt, attrs, D-Bus...), and start the supervisor.
BOOT = (
    "import sys;sys.path[:]=bytes.fromhex(sys.argv[1]).decode().split('\\0');"
    "p=type(sys)('sandboxed');p.__path__=[sys.argv[2]];p.__file__=sys.argv[2]+'/__init__.py';"
    "sys.modules['sandboxed']=p;"
    "import sandboxed._worker as w;w.site(sys.argv[3]);w.main()"
)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
START_TIMEOUT = 60.0
KILL_GRACE = 1.0

log = logging.getLogger("sandboxed")


_site_cache: str | None = None


def _site_setup() -> str:
    """What ``site`` did in this interpreter that the worker (started with ``-S``) must redo.

    ``site`` costs a cold start some 25 ms, mostly in .pth files; the worker gets
    this process's ``sys.path`` anyway, so it only needs the ``import`` lines of
    the .pth files in those directories (import hooks such as editable installs'
    finders) — except the one of sandboxed's own editable install, whose package
    the worker registers directly — and sitecustomize/usercustomize if they ran
    here. Returned as hex of NUL-separated fields: flags, then the lines.
    """
    global _site_cache
    if _site_cache is None:
        lines: list[str] = []
        for d in dict.fromkeys(sys.path):
            if not d or not os.path.isdir(d):
                continue
            try:
                names = sorted(n for n in os.listdir(d) if n.endswith(".pth"))
            except OSError:
                continue
            for name in names:
                if name.startswith("__editable__.sandboxed-"):
                    continue
                try:
                    with open(os.path.join(d, name), encoding="utf-8") as f:
                        for line in f:
                            if line.startswith(("import ", "import\t")):
                                lines.append(line.rstrip("\n"))
                except OSError:
                    continue
        flags = ("s" if "sitecustomize" in sys.modules else "") + (
            "u" if "usercustomize" in sys.modules else ""
        )
        _site_cache = "\0".join([flags, *lines]).encode().hex()
    return _site_cache


class _Flag:
    """A one-way flag (a threading.Event costs a lock and a condition per call)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


def _fields(data: bytearray, n: int) -> tuple[Any, ...]:
    """A codec-encoded tuple of ``n`` fields (control frames); ProtocolError otherwise."""
    value = _codec.decode(data)
    if not isinstance(value, tuple) or len(value) != n:
        raise ProtocolError(f"malformed control frame: expected {n} fields")
    return value


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def describe_status(status: int) -> tuple[str, int | None, str | None]:
    """(text, exit code, signal name) of a wait status."""
    if os.WIFSIGNALED(status):
        sig = _signal_name(os.WTERMSIG(status))
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by {sig}{core}", None, sig
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f"exited with status {code}", code, None
    return f"ended with wait status {status:#x}", None, None


class _Worker:
    __slots__ = ("calls", "exited", "id", "pid", "sock", "status", "unit")

    def __init__(self, unit: _Unit, wid: int, sock: socket.socket) -> None:
        self.unit = unit
        self.id = wid
        self.sock = sock
        self.pid: int | None = None
        self.status: int | None = None
        self.exited = threading.Event()
        self.calls = 0

    def kill(self, sig: int) -> None:
        self.unit.send_control(Kind.KILL, [_codec.encode((self.id, int(sig)))])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Unit:
    """A started transient unit: its control channel and its workers."""

    def __init__(self, sandbox: Sandbox, name: str) -> None:
        self.sandbox = sandbox
        self.name = name
        self.ctl: socket.socket | None = None
        self.diag: socket.socket | None = None
        self.workers: dict[int, _Worker] = {}
        self.ids = itertools.count(1)
        self.alive = False
        self.ready = threading.Event()
        self.info: dict[str, Any] = {}
        self.ctl_lock = threading.Lock()
        self.reader: threading.Thread | None = None
        self.probe: CgroupProbe | None = None
        self.failure: BaseException | None = None

    # -- start ---------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        from sandboxed import _manager

        ctl_here, ctl_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        diag_here, diag_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl, self.diag = ctl_here, diag_here
        props = self.sandbox.unit_properties(ctl_there.fileno(), diag_there.fileno())
        client = _manager_client()
        try:
            client.start_transient_unit(self.name, props, wait=False)
        except BaseException:
            self.close()
            raise
        finally:
            ctl_there.close()
            diag_there.close()
        self.ctl.settimeout(timeout)
        try:
            kind, _flags, parts = recv_frame(self.ctl, limit=1 << 20)
            if kind != Kind.READY:
                raise ProtocolError(f"expected READY, got {kind.name}")
            info = _codec.decode(parts[0])
            self.info = info if isinstance(info, dict) else {}
        except (EOFError, OSError, ProtocolError) as e:
            detail = self._diagnostics(client)
            self.close()
            with contextlib.suppress(Exception):
                client.stop_unit(self.name, wait=False)
            raise UnitFailedError(self.name, f"the worker did not start ({e})", detail) from None
        self.ctl.settimeout(None)
        self.alive = True
        self.probe = CgroupProbe(self.name, _manager.current())
        self.reader = threading.Thread(
            target=self._read_control, name=f"sandboxed-ctl-{self.name}", daemon=True
        )
        self.reader.start()

    def _diagnostics(self, client: Any) -> str:
        text = ""
        if self.diag is not None:
            self.diag.setblocking(False)
            with contextlib.suppress(OSError):
                text = self.diag.recv(1 << 16).decode(errors="replace")
        try:
            props = client.get_unit_properties(self.name, "org.freedesktop.systemd1.Service")
            status = props.get("ExecMainStatus")
            result = props.get("Result")
            extra = f"unit result {result!r}, main process exit status {status}"
            if status == 226:
                extra += " (226/NAMESPACE: systemd could not set up the unit's mount namespace)"
            text = (text + "\n" + extra).strip()
        except Exception:  # noqa: BLE001
            pass
        return text

    # -- control channel -----------------------------------------------------------------

    def send_control(self, kind: Kind, parts: Sequence[bytes], fds: Sequence[int] = ()) -> None:
        if self.ctl is None:
            raise EOFError("the unit is gone")
        with self.ctl_lock:
            send_frame(self.ctl, kind, parts, fds)

    def _read_control(self) -> None:
        assert self.ctl is not None
        try:
            while True:
                kind, _flags, parts = recv_frame(self.ctl, limit=1 << 20)
                if kind == Kind.SPAWNED:
                    wid, pid = _fields(parts[0], 2)
                    w = self.workers.get(int(wid))
                    if w is not None:
                        w.pid = int(pid)
                elif kind == Kind.EXITED:
                    wid, _pid, status = _fields(parts[0], 3)
                    w = self.workers.pop(int(wid), None)
                    if w is not None:
                        w.status = int(status)
                        w.exited.set()
                elif kind == Kind.FAILED:
                    log.warning("sandbox %s: %s", self.name, _codec.decode(parts[0]))
        except (EOFError, OSError, ProtocolError, ValueError):
            pass
        self.alive = False
        for w in list(self.workers.values()):
            w.exited.set()
        self.sandbox._unit_gone(self)

    def spawn(self) -> _Worker:
        here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        wid = next(self.ids)
        w = _Worker(self, wid, here)
        self.workers[wid] = w
        try:
            self.send_control(Kind.SPAWN, [str(wid).encode()], [there.fileno()])
        except (OSError, EOFError) as e:
            self.workers.pop(wid, None)
            w.close()
            raise WorkerDiedError(self.name, f"cannot reach the unit's supervisor: {e}") from None
        finally:
            there.close()
        return w

    def close(self, shutdown: bool = True) -> None:
        """Close our ends of the channels; ``shutdown=False`` in a forked child, where
        shutting a socket down would also cut the parent's connection."""
        self.alive = False
        for s in (self.ctl, self.diag):
            if s is not None and shutdown:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        for w in list(self.workers.values()):
            w.close()

    def stop(self, wait: bool = True) -> None:
        """Close the channels (the supervisor exits on EOF) and stop the unit."""
        self.close()
        with contextlib.suppress(Exception):
            _manager_client().stop_unit(self.name, wait=wait, timeout=30)


_client_lock = threading.Lock()
_client: Any = None


def _manager_client() -> Any:
    """The process's shared manager connection, reconnected when it dropped."""
    global _client
    from sandboxed import _manager
    from sandboxed._bus import ManagerClient

    with _client_lock:
        if _client is None or _client.closed:
            loc = _manager.current()
            try:
                _client = ManagerClient(loc.address)
            except ManagerError:
                # The manager may have been restarted (embedded) or moved: look again.
                _manager.forget()
                _client = ManagerClient(_manager.current().address)
        return _client


def _reset_after_fork() -> None:
    global _client
    _client = None


class Sandbox:
    """All units and workers for one option set in this process."""

    def __init__(self, options: Any, max_workers: int | None = None) -> None:
        self.options = options
        self.max_workers = (
            max_workers or int(getattr(options, "workers", 0) or 0) or min(4, os.cpu_count() or 1)
        )
        self._cond = threading.Condition()
        self._unit: _Unit | None = None
        self._starting = False
        self._idle: list[_Worker] = []
        self._busy = 0
        self._closed = False
        self._serial = itertools.count(1)
        self._props_cache: list[tuple[str, str, object]] | None = None
        self.notes: tuple[str, ...] = ()
        self.unreachable: tuple[Exception, ...] = ()
        self._reachable_modules: set[str | None] = set()
        self._tasks_limited = directive_value(options, "TasksMax") is not None
        self.last_stats: CallStats | None = None

    # -- unit properties ---------------------------------------------------------------

    def base_properties(self) -> list[tuple[str, str, object]]:
        if self._props_cache is None:
            self._props_cache, self.notes, self.unreachable = unit_plan(self.options)
        return self._props_cache

    def check_reachable(self, fn: Callable[..., Any]) -> None:
        """Raise UnreachableCodeError if ``fn``'s module lies where the sandbox cannot read."""
        module = getattr(getattr(fn, "__func__", fn), "__module__", None)
        if module in self._reachable_modules:
            return  # the hot path: checked on an earlier call
        self.base_properties()
        check_module(fn, self.options)
        if not self.unreachable or module is None or module == "__main__":
            self._reachable_modules.add(module)
            return
        mod = sys.modules.get(module)
        path = os.path.realpath(getattr(mod, "__file__", None) or "/")
        for err in self.unreachable:
            where = getattr(err, "path", "")
            if where and (path == where or path.startswith(where.rstrip("/") + "/")):
                raise err
        self._reachable_modules.add(module)

    def unit_properties(self, ctl_fd: int, diag_fd: int) -> list[tuple[str, str, object]]:
        path = [os.getcwd() if p == "" else p for p in sys.path]
        arg = "\0".join(path).encode().hex()
        site_arg = _site_setup()
        _ensure_bytecode()
        exe = sys.executable
        props = [
            ("Description", "s", f"sandboxed worker of pid {os.getpid()}"),
            (
                "ExecStart",
                "a(sasb)",
                [(exe, [exe, "-S", "-s", "-B", "-c", BOOT, arg, PACKAGE_DIR, site_arg], False)],
            ),
            ("StandardInputFileDescriptor", "h", ctl_fd),
            ("StandardOutputFileDescriptor", "h", ctl_fd),
            ("StandardErrorFileDescriptor", "h", diag_fd),
            ("CollectMode", "s", "inactive-or-failed"),
        ]
        props.extend(self.base_properties())
        return props

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._closed

    @property
    def unit_name(self) -> str | None:
        u = self._unit
        return u.name if u is not None else None

    def _new_unit_name(self) -> str:
        key = getattr(self.options, "key", "0" * 12)[:12]
        return f"sandboxed-{key}-{os.getpid()}-{secrets.token_hex(3)}.service"

    # -- workers -------------------------------------------------------------------------

    def ensure_unit(self) -> _Unit:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("this sandbox has been shut down")
                u = self._unit
                if u is not None and u.alive:
                    return u
                if not self._starting:
                    self._starting = True
                    break
                self._cond.wait()
        try:
            u = _Unit(self, self._new_unit_name())
            u.start()
        except BaseException:
            with self._cond:
                self._starting = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._unit = u
            self._idle = []
            self._starting = False
            self._cond.notify_all()
        return u

    def _acquire(self) -> _Worker:
        unit = self.ensure_unit()
        with self._cond:
            while True:
                while self._idle:
                    w = self._idle.pop()
                    if w.unit is unit and unit.alive and not w.exited.is_set():
                        self._busy += 1
                        return w
                    w.close()
                if self._busy < self.max_workers:
                    self._busy += 1
                    break
                self._cond.wait()
        try:
            return unit.spawn()
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise

    def _release(self, w: _Worker, healthy: bool) -> None:
        with self._cond:
            self._busy -= 1
            if healthy and not self._closed and w.unit is self._unit and w.unit.alive:
                self._idle.append(w)
            else:
                w.close()
            self._cond.notify()

    def _unit_gone(self, unit: _Unit) -> None:
        with self._cond:
            if self._unit is unit:
                self._unit = None
            self._idle = [w for w in self._idle if w.unit is not unit]
            self._cond.notify_all()
        unit.close()
        # A unit whose supervisor died may still be loaded (failed): let systemd collect it.
        with contextlib.suppress(Exception):
            client = _manager_client()
            client.stop_unit(unit.name, wait=False)

    # -- calls -----------------------------------------------------------------------------

    def call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        on_start: Callable[[Callable[[], None]], None] | None = None,
        stats: bool = True,
        on_partial: Callable[[int, bool, list[bytearray]], None] | None = None,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker and return its result (or raise its error).

        ``on_start`` receives a function that cancels the running call (kills its worker).
        ``on_partial(index, ok, parts)`` receives each task outcome a batch streams
        (see :mod:`sandboxed._batch`) as it arrives.
        """
        _stats_local.last = None
        self.check_reachable(fn)
        opts = self.options
        safe = bool(getattr(opts, "safe_results", False))
        if timeout is None:
            timeout = getattr(opts, "timeout", None)
        limit = int(getattr(opts, "max_payload", 0) or DEFAULT_LIMIT)
        parts = _serial.dumps_call(fn, args, kwargs)
        size = sum(memoryview(p).nbytes for p in parts)
        if size > limit:
            raise PayloadTooLargeError("call (function and arguments)", size, limit)
        header = _call_header(safe, logging.getLogger().getEffectiveLevel(), timeout is not None)
        w = self._acquire()
        healthy = False
        cancelled = _Flag()
        if on_start is not None:

            def cancel() -> None:
                cancelled.set()
                with contextlib.suppress(Exception):
                    w.kill(signal.SIGKILL)

            on_start(cancel)
        probe = w.unit.probe if stats else None
        before = None
        if probe is not None:
            before = probe.snapshot_with_pids() if self._tasks_limited else probe.snapshot()
        t0 = time.monotonic()
        try:
            try:
                send_frame(w.sock, Kind.CALL, [header, *parts])
            except OSError:
                raise self._died(w, cancelled) from None
            # Until the worker says the function started (imports, unpickling) the
            # call gets a generous start-up allowance; then its own timeout.
            deadline = None if timeout is None else t0 + START_TIMEOUT + float(timeout)
            while True:
                if deadline is not None:
                    # Wait for the next frame with the deadline, but read a frame that
                    # has begun to its end: a timeout inside one would lose the stream's
                    # framing. A worker that stalls mid-frame past the deadline is
                    # stopped like one that overruns.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([w.sock], [], [], remaining)[0]:
                        self._stop_worker(w)
                        raise SandboxTimeoutError(float(timeout), w.unit.name)  # type: ignore[arg-type]
                    w.sock.settimeout(max(deadline - time.monotonic(), 0.0) + KILL_GRACE)
                try:
                    kind, _flags, reply = recv_frame(w.sock, limit=limit)
                except TimeoutError:
                    self._stop_worker(w)
                    raise SandboxTimeoutError(float(timeout), w.unit.name) from None  # type: ignore[arg-type]
                except (EOFError, ConnectionError, ProtocolError):
                    raise self._died(w, cancelled) from None
                if kind == Kind.PARTIAL:
                    if on_partial is not None:
                        index, ok = _fields(reply[0], 2)
                        on_partial(index, ok, reply[1:])
                elif kind == Kind.STARTED:
                    if timeout is not None:
                        deadline = time.monotonic() + float(timeout)
                elif kind == Kind.OUTPUT:
                    _write_output(bytes(reply[0]), reply[1])
                elif kind == Kind.LOG:
                    _emit_log(reply[0])
                elif kind in (Kind.RESULT, Kind.ERROR):
                    if deadline is not None:
                        w.sock.settimeout(None)
                    healthy = True
                    w.calls += 1
                    self._record(probe, before, t0)
                    if kind == Kind.RESULT:
                        return _serial.loads_result(reply[0], reply[1:], safe=safe)
                    raise _serial.loads_exception(reply[0], reply[1:], safe=safe)
        except PayloadTooLargeError:
            self._stop_worker(w)
            raise
        except BaseException as e:
            limit_error = self._tasks_limit_hit(w, probe, before, e)
            if limit_error is not None:
                healthy = False
                raise limit_error from e
            raise
        finally:
            if (
                healthy
                and probe is not None
                and before is not None
                and self._tasks_hit(probe, before)
            ):
                # Processes forked up to TasksMax= may still run: recycle the unit.
                healthy = False
                self._recycle(w.unit)
            self._release(w, healthy)

    def _tasks_hit(self, probe: CgroupProbe, before: Any) -> bool:
        if not self._tasks_limited:
            return False  # only an explicit TasksMax= is watched (a file read per call)
        try:
            return bool(probe.pids_limit_hits() > before.pids_hits)
        except Exception:  # noqa: BLE001
            return False

    def _tasks_limit_hit(
        self, w: _Worker, probe: CgroupProbe | None, before: Any, err: BaseException
    ) -> ResourceLimitError | None:
        """A ResourceLimitError when ``err`` came with the unit hitting TasksMax=."""
        if probe is None or before is None or isinstance(err, ResourceLimitError):
            return None
        if not self._tasks_hit(probe, before):
            return None
        self._recycle(w.unit)
        return ResourceLimitError(
            "TasksMax",
            directive_value(self.options, "TasksMax"),
            f"the call tried to create more tasks than the unit allows ({err.__class__.__name__}: "
            f"{err}); the unit was stopped with everything it forked and the next call gets a "
            "fresh one",
        )

    def _recycle(self, unit: _Unit) -> None:
        """Stop ``unit`` (and all its processes); the next call starts a fresh one."""
        with self._cond:
            if self._unit is unit:
                self._unit = None
            self._cond.notify_all()
        unit.stop(wait=False)

    def _record(self, probe: CgroupProbe | None, before: Any, t0: float) -> None:
        if probe is None or before is None:
            return
        with contextlib.suppress(Exception):
            self.last_stats = probe.delta(before, time.monotonic() - t0)
            _stats_local.last = self.last_stats

    def _stop_worker(self, w: _Worker) -> None:
        """Terminate, then kill, a worker whose call we abandon."""
        with contextlib.suppress(Exception):
            w.kill(signal.SIGTERM)
            if not w.exited.wait(KILL_GRACE):
                w.kill(signal.SIGKILL)
                w.exited.wait(KILL_GRACE)
        w.close()

    def _died(self, w: _Worker, cancelled: _Flag) -> BaseException:
        """The error for a call whose worker vanished."""
        unit = w.unit
        w.exited.wait(2.0)
        if cancelled.is_set():
            import asyncio

            return asyncio.CancelledError()
        status = w.status
        if status is None:
            if not unit.alive:
                return WorkerDiedError(unit.name, "the unit stopped while the call was running")
            return WorkerDiedError(unit.name, "the channel to the worker closed unexpectedly")
        text, code, sig = describe_status(status)
        if sig == "SIGKILL" and unit.probe is not None and unit.probe.oom_killed():
            return SandboxMemoryError(unit.name, _memory_limit(self.options))
        if sig == "SIGKILL":
            text += " (from outside the call: SIGKILL was sent to the worker)"
        err = WorkerDiedError(unit.name, text, exit_code=code, signal=sig)
        return err

    def abandon(self) -> None:
        """In a forked child: drop the parent's channels without touching its units."""
        unit, self._unit = self._unit, None
        self._idle = []
        self._cond = threading.Condition()
        if unit is not None:
            unit.close(shutdown=False)

    def shutdown(self, wait: bool = True) -> None:
        with self._cond:
            self._closed = True
            unit, self._unit = self._unit, None
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for w in idle:
            w.close()
        if unit is not None:
            unit.stop(wait=wait)


_stats_local = threading.local()


@functools.lru_cache(maxsize=64)
def _call_header(safe: bool, log_level: int, ack: bool) -> bytes:
    """The CALL frame's header part; encoded once per combination (the worker caches it too)."""
    return _codec.encode({"safe": safe, "log_level": log_level, "ack": ack})


def thread_last_stats() -> CallStats | None:
    """Resource figures of the last call made by this thread (None if it failed early)."""
    return getattr(_stats_local, "last", None)


def _memory_limit(options: Any) -> int | None:
    for name in ("MemoryMax", "MemoryLimit"):
        value = directive_value(options, name)
        if isinstance(value, int):
            return value
    return None


def _write_output(stream: bytes, data: bytearray) -> None:
    target = sys.stderr if stream == b"stderr" else sys.stdout
    text = bytes(data).decode("utf-8", errors="replace")
    try:
        target.write(text)
        target.flush()
    except (OSError, ValueError):
        pass


def _emit_log(data: bytearray) -> None:
    try:
        rec = _codec.decode(data)
    except Exception:  # noqa: BLE001 - a malformed record is dropped, not raised in the caller
        return
    if not isinstance(rec, dict):
        return
    allowed = {
        "name",
        "levelno",
        "levelname",
        "msg",
        "pathname",
        "filename",
        "module",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "process",
        "threadName",
        "exc_text",
    }
    fields = {k: v for k, v in rec.items() if k in allowed}
    fields["args"] = None
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(str(fields.get("name", "root")))
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
