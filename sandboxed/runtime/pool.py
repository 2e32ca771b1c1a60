"""A sandbox: one transient unit for one option set, and the pool of workers inside it.

The calling thread does its own I/O (:mod:`sandboxed.runtime.call`), which keeps a
warm call to a single ``sendmsg`` and a few ``recv``s.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sandboxed._errors import ManagerError, ManagerUnavailableError, UnitFailedError
from sandboxed.directives.facts import UNKNOWN_HOST
from sandboxed.runtime import call as _call
from sandboxed.runtime import client as _client
from sandboxed.runtime.channel import UnitChannel, WorkerChannel, descriptor_limit
from sandboxed.runtime.client import manager_client
from sandboxed.runtime.facts import host_facts
from sandboxed.runtime.host_checks import check_host
from sandboxed.runtime.launch import exec_properties, guard_argument
from sandboxed.runtime.plan import (
    check_module,
    directive_spelling,
    directive_value,
    guard_plan,
    unit_plan,
)
from sandboxed.runtime.stats import CallStats
from sandboxed.wire import frames

log = logging.getLogger("sandboxed")


class _Waiter:
    """A thread waiting for a worker: what it is handed, and a lock to wake it alone."""

    __slots__ = ("grant", "lock")

    def __init__(self) -> None:
        self.grant: WorkerChannel | str | None = None
        self.lock = threading.Lock()
        self.lock.acquire()


_SLOT = "slot"  # a waiter is handed a free place to spawn a worker in
_CLOSED = "closed"  # the sandbox was shut down while it waited


def default_workers() -> int:
    """Calls one unit runs at once when ``workers=`` is not given: ``min(32, CPUs + 4)``.

    The decorator's callers are threads and asyncio tasks, often waiting on I/O
    (a sandboxed call that sleeps or awaits holds its worker, not a CPU), so the
    ceiling is ``ThreadPoolExecutor``'s (and asyncio's default executor's), not
    the CPU count. Workers are forked only when that many calls are in flight.
    """
    return min(32, (os.cpu_count() or 1) + 4)


class Sandbox:
    """All units and workers for one option set in this process.

    Workers are handed to calling threads first come, first served: a thread that
    releases a worker while others wait gives it to the one that waited longest,
    rather than taking it back for its own next call.
    """

    def __init__(self, options: Any, max_workers: int | None = None) -> None:
        self.options = options
        self.max_workers = (
            max_workers or int(getattr(options, "workers", 0) or 0) or default_workers()
        )
        self._cond = threading.Condition()
        self._unit: UnitChannel | None = None
        self._starting = False
        self._idle: list[WorkerChannel] = []
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._busy = 0
        self._closed = False
        self.last_used = time.monotonic()
        self.on_unit_started: Callable[[Sandbox], None] | None = None
        self.on_shutdown: Callable[[Sandbox], None] | None = None
        # By-value functions are shipped once per worker, then named by digest: workers
        # are reused. (A mode that ran each call in a fresh process would ship them each
        # time: it sets this False.)
        self.functions_apart = True
        self._props_cache: list[tuple[str, str, object]] | None = None
        self._guard = ""
        # Modules the unit's supervisor imports at boot, so that every worker forked
        # from it has them (set before the first call; see launch.with_preload).
        self.preload: tuple[str, ...] = ()
        self.host = UNKNOWN_HOST
        self.notes: tuple[str, ...] = ()
        self.unreachable: tuple[Exception, ...] = ()
        self._reachable_modules: set[str | None] = set()
        self.tasks_limited = directive_value(options, "TasksMax") is not None
        #: Untrusted code (safe results) gets a fresh process for every call, which
        #: knows no function yet: nothing to name by digest.
        self.fresh_per_call = bool(getattr(options, "safe_results", False))
        if self.fresh_per_call:
            self.functions_apart = False
        self.last_stats: CallStats | None = None
        self._host_checked = False
        #: Why the sandbox was shut down ("interpreter exit"...), for the calls it cut short.
        self.stop_reason: str | None = None
        #: Calls after which a worker is replaced (the executor's max_tasks_per_child).
        self.max_calls: int | None = None

    # -- unit properties ---------------------------------------------------------------

    def base_properties(self) -> list[tuple[str, str, object]]:
        """The unit's properties as planned for this host.

        Raises :class:`~sandboxed.UnenforceableDirectiveError` (before any unit
        starts) for a directive the manager in use cannot apply as asked.
        """
        if self._props_cache is None:
            from sandboxed.runtime.rootless import user_manager_host

            # A user manager gets the rootless form of the options, or refuses them; a
            # directive this host (or its systemd's version) cannot enforce is refused:
            # decided here, before any unit of this sandbox exists.
            rootless = _client.while_unavailable(lambda: user_manager_host(manager_client()))
            self.host = _client.while_unavailable(host_facts)
            self._props_cache, self.notes, self.unreachable = unit_plan(
                self.options, rootless, self.host
            )
            self._guard = guard_argument(*guard_plan(self.options, rootless))
        return self._props_cache

    def describe(self) -> str:
        """The option set's account, then the forms chosen for this host and why."""
        self.base_properties()
        host = self.host
        lines = [
            self.options.describe(),
            f"on this host: systemd {host.version}, {host.cgroup_layout} cgroups",
        ]
        lines += [f"  {note}" for note in self.notes] or ["  (nothing adjusted)"]
        return "\n".join(lines)

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

    def unit_properties(
        self, ctl_fd: int, diag_fd: int, pinned: bool = False
    ) -> list[tuple[str, str, object]]:
        """Every property of a new unit: the worker's command and channels, then the plan's."""
        base = self.base_properties()
        return [*exec_properties(ctl_fd, diag_fd, pinned, self._guard, self.preload), *base]

    def _limits(self) -> dict[str, str]:
        """The directives that can end the unit, spelled as given, for errors that name them."""
        out = {}
        for name in ("MemoryMax", "RuntimeMaxSec"):
            spelled = directive_spelling(self.options, name)
            if spelled is not None:
                out[name] = spelled
        return out

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

    def ensure_unit(self) -> UnitChannel:
        """The running unit, started if needed; after a manager reload, checked first
        and replaced if it lost any of its configuration."""
        if not self._host_checked:
            # What this host can tell (users, groups, paths) fails here, before any unit.
            check_host(self.options)
            self._host_checked = True
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        raise RuntimeError("this sandbox has been shut down")
                    u = self._unit
                    if u is not None and u.alive and u.generation == _client.generation:
                        return u
                    if not self._starting:
                        self._starting = True
                        break
                    self._cond.wait()
            if u is None or not u.alive:
                break
            # The manager reloaded since this unit was last checked: no call runs in
            # it until we know it still has everything it was started with.
            generation, announced = _client.generation, _client.announced
            good = u.still_as_started(self.base_properties(), thorough=announced != u.announced)
            with self._cond:
                self._starting = False
                if good:
                    u.generation = max(u.generation, generation)
                    u.announced = max(u.announced, announced)
                elif self._unit is u:
                    self._unit = None
                self._cond.notify_all()
            if not good:
                log.warning(
                    "sandbox %s lost its configuration in a manager reload (or vanished); "
                    "it is stopped and replaced",
                    u.name,
                )
                u.stop(wait=False)
        try:
            u = self._start_unit()
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
        hook = self.on_unit_started
        if hook is not None:
            hook(self)
        return u

    def _start_unit(self) -> UnitChannel:
        """Start a new unit, retrying (each time under a new name) while the manager
        reloads, re-executes or comes back, for at most ``MANAGER_RETRY_SECONDS``;
        then :class:`ManagerUnavailableError`."""
        from sandboxed.systemd import bus

        bound = bus.MANAGER_RETRY_SECONDS
        deadline = time.monotonic() + bound
        delay = 0.05
        refusals = 0
        while True:
            generation = _client.generation
            began = time.monotonic()
            u = UnitChannel(
                self._new_unit_name(),
                self.unit_properties,
                self._unit_gone,
                self._limits(),
                env=getattr(self.options, "env", ()) or (),
            )
            try:
                u.start()
                return u
            except ManagerError as e:
                unavailable = bus.manager_unavailable(e)
                # A start that met a reload may have been re-read from its unit file
                # half-way: worth another try too. A bus client is told of no reload:
                # the manager says when it last loaded its units.
                reloaded = isinstance(e, UnitFailedError) and (
                    _client.generation != generation or _client.reloaded_since(began)
                )
                # A unit the worker's guard found weaker than promised (seen: one start
                # in 500 beside a reload loop) is never used; a fresh one may hold.
                refused = (
                    isinstance(e, UnitFailedError) and e.exit_status == frames.GUARD_REFUSED_EXIT
                )
                # A unit the manager no longer had when we asked why it failed, with
                # nothing on the worker's stderr: dropped by the manager in a way the
                # checks above could not tell, or a worker that exited 0 before READY.
                # Twice at most, so a real failure still surfaces quickly, unchanged.
                vanished = isinstance(e, UnitFailedError) and e.vanished
                refusals += refused or vanished
                if not (unavailable or reloaded or ((refused or vanished) and refusals <= 2)):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    if unavailable:
                        raise ManagerUnavailableError(
                            "cannot start a sandbox unit: the service manager did not "
                            f"answer for {bound:g} s (reloading, re-executing or gone): {e}"
                        ) from e
                    raise
                # The lost attempt may have created its unit: it must not linger.
                with contextlib.suppress(Exception):
                    manager_client().stop_unit(u.name, wait=False)
                time.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def acquire(self, fresh: bool = False) -> WorkerChannel:
        """A worker for one call: an idle one, or (``fresh``, or none idle) a new one."""
        unit = self.ensure_unit()
        with self._cond:
            grant: WorkerChannel | str | None = None
            if not self._waiters:
                while self._idle and not fresh:
                    w = self._idle.pop()
                    if w.unit is unit and unit.alive and not w.exited.is_set():
                        self._busy += 1
                        return w
                    w.close()
                if self._busy < self.max_workers:
                    self._busy += 1
                    grant = _SLOT
            if grant is None:
                waiter = _Waiter()
                self._waiters.append(waiter)
        if grant is None:
            grant = self._wait(waiter)
        if isinstance(grant, WorkerChannel):
            w = grant
            if not fresh and w.unit.alive and not w.exited.is_set() and w.unit is self._unit:
                return w
            w.close()  # gone while handed over, or not fresh: the place stays ours
        try:
            return self.ensure_unit().spawn()
        except BaseException:
            self._pass_slot()
            raise

    def _wait(self, waiter: _Waiter) -> WorkerChannel | str:
        """Block until ``waiter`` is handed a worker or a place; raise if shut down."""
        try:
            waiter.lock.acquire()
        except BaseException:
            # Interrupted: leave the queue, or hand on what arrived meanwhile.
            with self._cond:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            if not queued:
                if isinstance(waiter.grant, WorkerChannel):
                    self.release(waiter.grant, True)
                elif waiter.grant == _SLOT:
                    self._pass_slot()
            raise
        grant = waiter.grant
        assert grant is not None
        if grant == _CLOSED:
            raise RuntimeError("this sandbox has been shut down")
        return grant

    def _hand(self, grant: WorkerChannel | str) -> bool:
        """With the lock held: give ``grant`` to the longest waiting thread, if any."""
        if not self._waiters:
            return False
        waiter = self._waiters.popleft()
        waiter.grant = grant
        waiter.lock.release()
        return True

    def _pass_slot(self) -> None:
        """A place for a worker is free: hand it on, or count it free."""
        with self._cond:
            if not self._hand(_SLOT):
                self._busy -= 1

    def release(self, w: WorkerChannel, healthy: bool) -> None:
        """Take ``w`` back after a call: to the idle workers (trusted code, warm reuse), or,
        for untrusted code (safe results), close it (it exits, and the supervisor ends
        whatever it left running) and put a fresh process in its place, forked by the
        supervisor, which never runs user code: no call sees what another left behind."""
        if self.max_calls is not None and w.calls >= self.max_calls:
            healthy = False  # max_tasks_per_child: the next call gets a fresh worker
        spare = None
        if self.fresh_per_call:
            w.close()
            if not self._closed and w.unit is self._unit and w.unit.alive:
                # Forked now, while the caller handles the result, so that the next call
                # finds it ready; if this fails, the next call spawns its own.
                with contextlib.suppress(Exception):
                    spare = w.unit.spawn()
        with self._cond:
            self.last_used = time.monotonic()
            if self.fresh_per_call:
                if spare is not None:
                    if self._hand(spare):
                        return
                    self._busy -= 1
                    self._idle.append(spare)
                elif not self._hand(_SLOT):
                    self._busy -= 1
                return
            if healthy and not self._closed and w.unit is self._unit and w.unit.alive:
                if self._hand(w):
                    return
                self._busy -= 1
                self._idle.append(w)
                return
            w.close()
            if not self._hand(_SLOT):
                self._busy -= 1

    def release_unit(self) -> bool:
        """Stop the unit if no call uses it (the next call starts a new one); True if stopped."""
        with self._cond:
            unit = self._unit
            if unit is None or self._busy or self._starting or self._waiters:
                return False
            self._unit = None
            idle, self._idle = self._idle, []
        for w in idle:
            w.close()
        unit.stop(wait=False)
        return True

    def _unit_gone(self, unit: UnitChannel) -> None:
        with self._cond:
            if self._unit is unit:
                self._unit = None
            self._idle = [w for w in self._idle if w.unit is not unit]
            self._cond.notify_all()
        unit.close()
        # A unit whose supervisor died may still be loaded (failed): let systemd collect it.
        with contextlib.suppress(Exception):
            client = manager_client()
            client.stop_unit(unit.name, wait=False)

    def recycle(self, unit: UnitChannel) -> None:
        """Stop ``unit`` (and all its processes); the next call starts a fresh one."""
        with self._cond:
            if self._unit is unit:
                self._unit = None
            self._cond.notify_all()
        unit.stop(wait=False)

    def abandon(self) -> None:
        """In a forked child: drop the parent's channels without touching its units."""
        unit, self._unit = self._unit, None
        self._idle = []
        self._waiters = collections.deque()
        self._busy = 0
        self._cond = threading.Condition()
        if unit is not None:
            unit.close(shutdown=False)

    def shutdown(self, wait: bool = True, reason: str | None = None) -> None:
        """Stop the unit; calls it cuts short raise WorkerDiedError naming ``reason``."""
        with self._cond:
            self._closed = True
            if reason is not None:
                self.stop_reason = reason
            unit, self._unit = self._unit, None
            idle, self._idle = self._idle, []
            while self._hand(_CLOSED):
                pass
            self._cond.notify_all()
        hook = self.on_shutdown
        if hook is not None:
            hook(self)
        for w in idle:
            w.close()
        if unit is not None:
            unit.stop(wait=wait)

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
        fresh: bool = False,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker and return its result (or raise its error).

        ``on_start`` receives a function that cancels the running call (kills its worker).
        ``on_partial(index, ok, parts)`` receives each task outcome a batch streams
        (see :mod:`sandboxed.worker.batch`) as it arrives. The call's resource figures
        are kept in :func:`sandboxed.runtime.stats.last` and :attr:`last_stats`.
        ``fresh=True`` runs the call in a worker process of its own, forked for it and
        ended after it: nothing the call changes in its process reaches a later call.
        """
        try:
            return _call.run(self, fn, args, kwargs, timeout, on_start, stats, on_partial, fresh)
        except OSError as e:
            # Out of descriptors anywhere on the way (the reach plan reads directories,
            # the unit needs sockets): a SandboxError saying so, not a bare EMFILE.
            limit = descriptor_limit(e, "make a sandboxed call")
            if limit is None:
                raise
            raise limit from e
