"""A started unit seen from the caller: its control channel and its workers' sockets.

The unit's main process is the supervisor (:mod:`sandboxed.worker.supervisor`),
which systemd starts with our control socket as its stdin/stdout. Each worker
gets its own socket (passed to the supervisor with SCM_RIGHTS), so a call talks
to its worker directly: no relay, no thread hop.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sandboxed._errors import (
    DescriptorLimitError,
    ProtocolError,
    UnitFailedError,
    WorkerDiedError,
)
from sandboxed.runtime import client as _client
from sandboxed.runtime.client import manager_client, while_unavailable
from sandboxed.runtime.plan import directive_name
from sandboxed.runtime.relay import write_output
from sandboxed.systemd import locate
from sandboxed.systemd.cgroups import CgroupProbe
from sandboxed.systemd.exit_status import EXIT_STATUSES, describe_exit_status
from sandboxed.wire import codec, frames
from sandboxed.wire.framing import FrameType, recv_frame, send_frame

START_TIMEOUT = 60.0
#: How long to wait for systemd to finish with a unit whose main process ended, before
#: reading why it ended.
END_WAIT = 3.0
#: What a worker needs to start, measured with systemd 252 and CPython 3.11 (the
#: interpreter, sandboxed's worker modules, a small module of functions).
WORKER_MEMORY_NEED = "about 10 MiB"
_EXITED = 1  # ExecMainCode: CLD_EXITED
_KILLED = (2, 3)  # CLD_KILLED, CLD_DUMPED
_SCALAR_TYPES = frozenset("bynqiuxtds")
# Settings a reload is known to lose, checked even by the cheap check.
_LOST_IN_RELOADS = frozenset({"RestrictNamespaces"})


def _cap_mask() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return (1 << (int(f.read()) + 1)) - 1
    except (OSError, ValueError):
        return (1 << 64) - 1


def _same(name: str, now: object, sent: object) -> bool:
    """Is the value the manager reports the one we sent, as the kernel sees it?"""
    if name in ("CapabilityBoundingSet", "AmbientCapabilities") and isinstance(sent, int):
        # Re-read from the unit file, a capability set keeps only the capabilities
        # this kernel has: the same set.
        mask = _cap_mask()
        return isinstance(now, int) and now & mask == sent & mask
    return now == sent


log = logging.getLogger("sandboxed")


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


class ShippedFunctions:
    """The caller's account of the by-value functions one worker holds, by digest.

    It follows the worker's own rule (``frames.FUNCTION_CACHE_SIZE`` entries, the
    least recently used out), so it knows which function to ship again. It is the
    caller's own record: nothing the worker says changes what the caller sends, except
    that a worker claiming not to have a function gets it again.
    """

    __slots__ = ("digests",)

    def __init__(self) -> None:
        self.digests: dict[bytes, None] = {}

    def has(self, digest: bytes) -> bool:
        """True if the worker was sent ``digest`` and still has it (which counts as a use)."""
        if digest in self.digests:
            del self.digests[digest]
            self.digests[digest] = None
            return True
        return False

    def add(self, digest: bytes) -> None:
        self.digests.pop(digest, None)
        self.digests[digest] = None
        while len(self.digests) > frames.FUNCTION_CACHE_SIZE:
            del self.digests[next(iter(self.digests))]

    def forget(self, digest: bytes) -> None:
        self.digests.pop(digest, None)


def socketpair(what: str) -> tuple[socket.socket, socket.socket]:
    """A connected pair of Unix sockets; :class:`DescriptorLimitError` when out of fds."""
    try:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as e:
        limit = descriptor_limit(e, what)
        if limit is None:
            raise
        raise limit from e


def descriptor_limit(err: OSError, what: str) -> DescriptorLimitError | None:
    """The :class:`DescriptorLimitError` that ``err`` is (EMFILE, ENFILE), or None."""
    if err.errno not in (errno.EMFILE, errno.ENFILE):
        return None
    import resource

    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        count: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        count = None
    return DescriptorLimitError(what, limit, count)


class WorkerChannel:
    __slots__ = ("calls", "exited", "functions", "id", "pid", "sock", "status", "unit")

    def __init__(self, unit: UnitChannel, wid: int, sock: socket.socket) -> None:
        self.unit = unit
        self.id = wid
        self.sock = sock
        self.pid: int | None = None
        self.status: int | None = None
        self.exited = threading.Event()
        self.calls = 0
        self.functions = ShippedFunctions()

    def kill(self, sig: int) -> None:
        self.unit.send_control(FrameType.KILL, [frames.pack(FrameType.KILL, self.id, int(sig))])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class UnitChannel:
    """A started transient unit: its control channel and its workers."""

    def __init__(
        self,
        name: str,
        properties: Callable[[int, int, bool], list[tuple[str, str, object]]],
        on_gone: Callable[[UnitChannel], None],
        limits: dict[str, str] | None = None,
        env: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``properties(ctl_fd, diag_fd, pinned)`` gives the new unit's properties;
        ``on_gone`` is called (from the reader thread) once the unit's control channel
        has closed. ``limits`` are the directives that can end the unit, spelled as
        given (``{"MemoryMax": "6M", "RuntimeMaxSec": "2s"}``), for the errors that name
        them. ``env`` (name, value) pairs go to the supervisor over the channel, never
        into a unit property (those are readable by every unit over D-Bus)."""
        self.name = name
        self._env = tuple(env)
        self.limits = dict(limits or {})
        # Pinned (AddRef, on a bus): systemd keeps the unit loaded after it ended until
        # we read why; on the private socket a failed unit waits for ResetFailedUnit.
        self.pinned = False
        self.closing = False
        #: (Result, ExecMainCode, ExecMainStatus) once the unit ended on its own.
        self.end: tuple[str, int, int] | None = None
        self._properties = properties
        self._on_gone = on_gone
        self.ctl: socket.socket | None = None
        self.diag: socket.socket | None = None
        self.workers: dict[int, WorkerChannel] = {}
        self.ids = itertools.count(1)
        self.alive = False
        self.ready = threading.Event()
        self.info: dict[str, Any] = {}
        self.ctl_lock = threading.Lock()
        self.reader: threading.Thread | None = None
        self.probe: CgroupProbe | None = None
        self.failure: BaseException | None = None
        # The manager generation and announcement count (runtime.client) this unit
        # was last known good in.
        self.generation = _client.generation
        self.announced = _client.announced

    # -- start ---------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        ctl_here, ctl_there = socketpair("start a sandbox unit")
        try:
            diag_here, diag_there = socketpair("start a sandbox unit")
        except BaseException:
            ctl_here.close()
            ctl_there.close()
            raise
        self.ctl, self.diag = ctl_here, diag_here
        client = manager_client()
        self.pinned = not client.peer_to_peer
        props = self._properties(ctl_there.fileno(), diag_there.fileno(), self.pinned)
        try:
            client.start_transient_unit(self.name, props, wait=False, name_property=directive_name)
        except BaseException:
            self.close()
            raise
        finally:
            ctl_there.close()
            diag_there.close()
        self.ctl.settimeout(timeout)
        try:
            kind, _flags, parts = recv_frame(self.ctl, limit=1 << 20)
            if kind != FrameType.READY:
                raise ProtocolError(f"expected READY, got {kind.name}")
            info = codec.decode(parts[0])
            self.info = info if isinstance(info, dict) else {}
        except (EOFError, OSError, ProtocolError) as e:
            detail = self._diagnostics()
            cause, status = self._start_failure(str(e))
            self.close()
            with contextlib.suppress(Exception):
                client.stop_unit(self.name, wait=False)
            vanished = self.end is None and not detail
            raise UnitFailedError(
                self.name, cause, detail, exit_status=status, vanished=vanished
            ) from None
        self.ctl.settimeout(None)
        if self._env:
            # Before any SPAWN on the same ordered channel: every worker forks with it.
            self.send_control(FrameType.ENV, [s.encode() for pair in self._env for s in pair])
        self.probe = CgroupProbe(self.name, locate.current(), manager_client)
        try:
            # Resolved here, where a manager that re-executes is waited for, rather
            # than in the first call.
            while_unavailable(self.probe.dirs)
        except BaseException:
            self.close()
            with contextlib.suppress(Exception):
                client.stop_unit(self.name, wait=False)
            raise
        self.alive = True
        self.reader = threading.Thread(
            target=self._read_control, name=f"sandboxed-ctl-{self.name}", daemon=True
        )
        self.reader.start()

    def still_as_started(
        self, expected: Sequence[tuple[str, str, object]], thorough: bool = True
    ) -> bool:
        """Does the manager still hold this unit to what it was started with?

        Asked after the manager reloaded or re-executed, which re-reads every unit
        from its transient file: a unit whose file could not be read again (or that
        vanished) keeps its processes but loses its limits (``LoadState=not-found``,
        ``MemoryMax=infinity``), and some settings do not survive the file (seen on
        systemd 252: ``RestrictNamespaces=yes`` is written as an empty assignment
        and read back as ``no``). ``expected`` are the properties it was started
        with; the scalar ones the manager reports back must be unchanged. Unless
        ``thorough``, only its load and active state and the settings known to be
        lost are asked (a few small calls instead of every property). Any doubt
        (no answer, a changed value) counts as no.
        """
        unit_iface = "org.freedesktop.systemd1.Unit"
        service_iface = "org.freedesktop.systemd1.Service"
        try:
            client = manager_client()
            path = client.unit_path(self.name)
            load = client.get_property(path, unit_iface, "LoadState")
            active = client.get_property(path, unit_iface, "ActiveState")
            if load != "loaded" or active not in ("active", "activating", "reloading"):
                return False
            if thorough:
                service = client.get_all(path, service_iface)
            else:
                service = {
                    name: client.get_property(path, service_iface, name)
                    for name, _sig, _value in expected
                    if name in _LOST_IN_RELOADS
                }
        except Exception:  # noqa: BLE001 - unknown is not good enough
            return False
        return all(
            _same(name, service[name], value)
            for name, sig, value in expected
            if sig in _SCALAR_TYPES and name in service
        )

    def _diagnostics(self) -> str:
        """What the worker wrote to its stderr before it went away."""
        text = ""
        if self.diag is not None:
            self.diag.setblocking(False)
            with contextlib.suppress(OSError):
                text = self.diag.recv(1 << 16).decode(errors="replace")
        return text.strip()

    # -- why the unit ended -------------------------------------------------------------

    def read_end(self) -> None:
        """Learn from systemd why the unit ended (:attr:`end`), then let it be collected."""
        if self.end is not None:
            return
        try:
            client = manager_client()
            deadline = time.monotonic() + END_WAIT
            while True:
                unit = client.get_unit_properties(self.name)
                if unit.get("LoadState") != "loaded":
                    return  # already collected: nothing to learn
                if unit.get("ActiveState") in ("failed", "inactive") or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            svc = client.get_unit_properties(self.name, "org.freedesktop.systemd1.Service")
            self.end = (
                str(svc.get("Result", "")),
                int(svc.get("ExecMainCode", 0)),
                int(svc.get("ExecMainStatus", 0)),
            )
        except Exception:  # noqa: BLE001 - the cause is best effort; the failure is reported anyway
            return
        finally:
            self._let_go()

    def _let_go(self) -> None:
        """Let systemd collect the unit: drop our reference (or its failed state)."""
        with contextlib.suppress(Exception):
            client = manager_client()
            if self.pinned:
                client.unref_unit(self.name)
            else:
                client.reset_failed_unit(self.name)

    def memory_text(self) -> str | None:
        """Why the unit died, when it ran out of its ``MemoryMax=`` before a call started."""
        limit = self.limits.get("MemoryMax")
        if limit is None or self.end is None:
            return None
        result, code, status = self.end
        if result == "oom-kill" or (code in _KILLED and status == signal.SIGKILL):
            return (
                f"the worker could not start within MemoryMax={limit}: the kernel killed it "
                "while the interpreter and the call's modules loaded; a worker needs "
                f"{WORKER_MEMORY_NEED} to start, plus what the call uses: raise MemoryMax="
            )
        return None

    def _start_failure(self, channel: str) -> tuple[str, int | None]:
        """(why the unit did not start, systemd's exit status or None)."""
        self.read_end()
        if self.end is None:
            return (
                f"the worker did not start ({channel}); systemd had already collected the "
                "unit: its journal has the cause",
                None,
            )
        result, code, status = self.end
        if code == _EXITED and status in EXIT_STATUSES:
            return (
                "systemd could not start the worker process: exit status "
                f"{describe_exit_status(status)} (systemd's result {result!r})",
                status,
            )
        memory = self.memory_text()
        if memory is not None:
            return memory, None
        how = (
            f"exited with status {status}"
            if code == _EXITED
            else f"was killed by {_signal_name(status)}"
        )
        return (
            f"the worker did not start ({channel}): its process {how} "
            f"(systemd's result {result!r})",
            status if code == _EXITED else None,
        )

    def end_text(self) -> str | None:
        """Why the unit ended while calls ran, in systemd's words and ours (or None)."""
        if self.end is None:
            return None
        result, code, status = self.end
        if result == "timeout":
            limit = self.limits.get("RuntimeMaxSec")
            if limit is not None:
                return (
                    f"RuntimeMaxSec={limit} ended the unit (systemd's result 'timeout'): it "
                    "bounds the unit's whole life, not one call; the next call gets a fresh "
                    "unit (for a per-call limit use timeout= or the Timeout preset)"
                )
            return "systemd stopped it for running too long (result 'timeout')"
        if code in _KILLED:
            sig = _signal_name(status)
            return f"its main process was killed by {sig} (systemd's result {result!r})"
        return f"systemd's result {result!r}, main process exit status {status}"

    # -- control channel -----------------------------------------------------------------

    def send_control(
        self, kind: FrameType, parts: Sequence[bytes], fds: Sequence[int] = ()
    ) -> None:
        if self.ctl is None:
            raise EOFError("the unit is gone")
        with self.ctl_lock:
            send_frame(self.ctl, kind, parts, fds)

    def _read_control(self) -> None:
        assert self.ctl is not None
        try:
            while True:
                kind, _flags, parts = recv_frame(self.ctl, limit=1 << 20)
                if kind == FrameType.SPAWNED:
                    wid, pid = frames.unpack(FrameType.SPAWNED, parts[0])
                    w = self.workers.get(int(wid))
                    if w is not None:
                        w.pid = int(pid)
                elif kind == FrameType.EXITED:
                    wid, _pid, status = frames.unpack(FrameType.EXITED, parts[0])
                    w = self.workers.pop(int(wid), None)
                    if w is not None:
                        w.status = int(status)
                        w.exited.set()
                elif kind == FrameType.OUTPUT and len(parts) == 2:
                    # What a worker wrote to fds 1/2 just before it died, from the supervisor.
                    write_output(bytes(parts[0]), parts[1])
                elif kind == FrameType.FAILED:
                    log.warning("sandbox %s: %s", self.name, codec.decode(parts[0]))
        except (EOFError, OSError, ProtocolError, ValueError):
            pass
        if not self.closing:
            self.read_end()
        self.alive = False
        for w in list(self.workers.values()):
            w.exited.set()
        self._on_gone(self)

    def spawn(self) -> WorkerChannel:
        here, there = socketpair("start a sandbox worker")
        wid = next(self.ids)
        w = WorkerChannel(self, wid, here)
        self.workers[wid] = w
        try:
            self.send_control(FrameType.SPAWN, [str(wid).encode()], [there.fileno()])
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
        if self.probe is not None:
            self.probe.close()

    def stop(self, wait: bool = True) -> None:
        """Close the channels (the supervisor exits on EOF) and stop the unit."""
        self.closing = True
        self.close()
        self._let_go()
        with contextlib.suppress(Exception):
            manager_client().stop_unit(self.name, wait=wait, timeout=30)
