"""``TransientUnitPoolExecutor``: the concurrentd executor, as a ``concurrent.futures.Executor``.

The pool owns one transient unit (its own, not shared with decorated
functions) started when the pool is built; ``max_workers`` workers run inside
it, forked by the unit's supervisor. A worker that dies fails only the
futures it was running and is replaced on the next task; the pool never
becomes "broken".

When tasks queue up, a pool thread sends a worker up to :data:`MAX_BATCH` of
them in one round trip (a fair share of the queue, so every worker gets some).
The worker streams each task's outcome back as soon as that task ends, so each
future gets its own result or exception when its task is done; a worker that
dies mid-batch fails only the task it was running, and the tasks queued behind
it in the batch (which never started) run again. The tasks of one batch share
its resource figures (``future.stats``, set when the batch ends). Pools with a
per-call ``timeout`` never batch.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import queue
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Executor, Future
from typing import Any, Literal, TypeVar

from sandboxed._errors import ConfigurationError, RemoteError, SerializationError, trim
from sandboxed.directives.directive import DIRECTIVES, RawProperty
from sandboxed.directives.options import OptionSet
from sandboxed.runtime import registry as _registry
from sandboxed.runtime.client import manager_client
from sandboxed.runtime.pool import Sandbox
from sandboxed.runtime.stats import CallStats, last_call_stats
from sandboxed.systemd import locate
from sandboxed.systemd.cgroups import CgroupProbe
from sandboxed.worker.batch import initialized, process_chunk, run_batch, unpack

T = TypeVar("T")

_SHUTDOWN = object()
#: How systemd spells "not known" for a ``t`` property such as ``CPUUsageNSec``.
_UNKNOWN = 2**64 - 1


_live: weakref.WeakSet[TransientUnitPoolExecutor] = weakref.WeakSet()


def _finish_pools() -> None:
    """At interpreter exit: run what was submitted to pools never shut down (as PPE does)."""
    for pool in list(_live):
        with contextlib.suppress(Exception):
            pool.shutdown(wait=True)


def _interrupted() -> BaseException:
    return CancelledError("the pool was interrupted (KeyboardInterrupt): this task was stopped")


def _pystemd_properties(props: Mapping[Any, Any]) -> tuple[dict[str, Any], list[RawProperty]]:
    """pystemd's properties dict as directives (by unit-file name) and raw bus properties.

    Keys may be ``bytes`` (pystemd's examples), and so may values. A key that is a
    directive name is validated as one; the bus name of a directive (``CPUQuotaPerSecUSec``)
    is sent as given, with that directive's D-Bus type.
    """
    directives: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    raw: list[RawProperty] = []
    for key, value in props.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        value = _text(value)
        if name in DIRECTIVES:
            # b"X" and "X" are two keys of the dict but one directive: not last-one-wins.
            if name in directives and directives[name] != value:
                raise ConfigurationError(
                    f"{name} is given twice in the properties dict, as {keys[name]!r} and "
                    f"{key!r}, with different values; give it once"
                )
            directives[name], keys[name] = value, key
            continue
        owner = next(
            (s for s in DIRECTIVES.values() if s.bus_names[0] == name and not s.reserved), None
        )
        if owner is None:
            raise ConfigurationError(
                f"pystemd property {name!r} is neither a directive nor the bus property of one; "
                f"write the directive as a keyword, or pass raw=[RawProperty({name!r}, "
                "signature, value)]"
            )
        raw.append(RawProperty(name, owner.signature, value))
    return directives, raw


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list | tuple):
        return type(value)(_text(v) for v in value)
    return value


class SandboxFuture(Future[Any]):
    """A future of a sandboxed task; ``stats`` holds its resource figures once done."""

    stats: CallStats | None = None


MAX_BATCH = 128
"""At most this many queued tasks travel to a worker in one round trip."""
BATCH_SECONDS = 0.02
"""A batch holds no more tasks than fit in this many seconds (measured per pool)."""


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables, strict=False)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


_UNIT_IFACE = "org.freedesktop.systemd1.Unit"
_SERVICE_IFACE = "org.freedesktop.systemd1.Service"
#: Properties that hold a PID in the manager's PID namespace (mapped to the caller's).
_PID_PROPERTIES = frozenset({"MainPID", "ControlPID", "ExecMainPID"})


class Unit:
    """The live unit of a pool; attributes are read from systemd over D-Bus when accessed.

    As in pystemd (and concurrentd), string properties come back as ``bytes``:
    ``pool.unit.Id.decode()``. Any property of the Unit or Service interface can
    be read this way (``ActiveState``, ``MainPID``, ``CPUUsageNSec``,
    ``MemoryCurrent``, ``TasksCurrent``, ``ControlGroup``...), and through
    pystemd's spellings ``pool.unit.Unit.ActiveState``,
    ``pool.unit.Service.MainPID`` and ``pool.unit.Service.GetProcesses()``.
    PIDs are in the caller's PID namespace. When the pool replaces its unit
    (``RuntimeMaxSec=`` ended it, a task hit ``TasksMax=``), this describes the
    new one.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._last = sandbox.unit_name or ""
        self._probe: CgroupProbe | None = None
        self._probe_for = ""

    @property
    def name(self) -> str:
        """The unit's name as a ``str`` (the current unit, or the last one if none runs)."""
        current = self._sandbox.unit_name
        if current:
            self._last = current
        return self._last

    @property
    def Unit(self) -> _Interface:  # noqa: N802 - pystemd's spelling
        """pystemd's ``unit.Unit``: the properties of the Unit interface."""
        return _Interface(self, _UNIT_IFACE)

    @property
    def Service(self) -> _Interface:  # noqa: N802 - pystemd's spelling
        """pystemd's ``unit.Service``: Service properties, and ``GetProcesses()``."""
        return _Interface(self, _SERVICE_IFACE)

    def properties(self) -> dict[str, Any]:
        """All Unit and Service properties, as systemd reports them now (PIDs mapped)."""
        client = manager_client()
        path = client.unit_path(self.name)
        props = client.get_all(path, _UNIT_IFACE)
        props.update(client.get_all(path, _SERVICE_IFACE))
        if props.get("CPUUsageNSec") == _UNKNOWN:
            props["CPUUsageNSec"] = self._cgroup_cpu_ns()
        for key in _PID_PROPERTIES & props.keys():
            props[key] = self._caller_pid(props[key])
        return dict(props)

    def probe(self) -> CgroupProbe:
        name = self.name
        if self._probe is None or self._probe_for != name:
            self._probe = CgroupProbe(name, locate.current(), manager_client)
            self._probe_for = name
        return self._probe

    def _cgroup_cpu_ns(self) -> int:
        """The unit's CPU time from its cgroup, for when systemd cannot tell.

        systemd 252 on a hybrid cgroup layout reads CPU time from the v1
        ``cpuacct`` controller only, and reports "unknown" (2**64-1) when that
        controller is not attached to the unit; the cgroup2 ``cpu.stat`` has it.
        """
        ns = self.probe().cpu_ns()
        return _UNKNOWN if ns is None else ns

    def _caller_pid(self, pid: Any) -> Any:
        if not isinstance(pid, int) or pid <= 0:
            return pid
        return _pid_map(self).get(pid, pid)

    def _get(self, iface: str | None, name: str) -> Any:
        if name == "Id" and iface in (None, _UNIT_IFACE):
            return self.name.encode()
        client = manager_client()
        path = client.unit_path(self.name)
        for candidate in (iface,) if iface else (_UNIT_IFACE, _SERVICE_IFACE):
            try:
                value = client.get_property(path, candidate, name)
            except Exception:  # noqa: BLE001 - try the next interface
                continue
            if name == "CPUUsageNSec" and value == _UNKNOWN:
                return self._cgroup_cpu_ns()
            if name in _PID_PROPERTIES:
                return self._caller_pid(value)
            return _bytes(value)
        raise AttributeError(f"unit {self.name} has no property {name!r}")

    def get_processes(self) -> list[tuple[bytes, int, bytes]]:
        """pystemd's ``Service.GetProcesses()``: ``(cgroup, pid, command line)`` of each
        process in the unit, PIDs in the caller's PID namespace."""
        client = manager_client()
        (procs,) = client._bus_call(
            "org.freedesktop.systemd1",
            client.unit_path(self.name),
            _SERVICE_IFACE,
            "GetProcesses",
        )
        pids = _pid_map(self)
        return [
            (str(cg).encode(), pids.get(int(pid), int(pid)), str(cmd).encode())
            for cg, pid, cmd in procs
        ]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not name[:1].isupper():
            raise AttributeError(name)
        return self._get(None, name)

    def __repr__(self) -> str:
        return f"<Unit {self.name}>"


class _Interface:
    """One D-Bus interface of a pool's unit, in pystemd's spelling (``unit.Service.MainPID``)."""

    def __init__(self, unit: Unit, iface: str) -> None:
        self._unit = unit
        self._iface = iface

    def GetProcesses(self) -> list[tuple[bytes, int, bytes]]:  # noqa: N802 - pystemd's spelling
        if self._iface != _SERVICE_IFACE:
            raise AttributeError("GetProcesses is a method of unit.Service")
        return self._unit.get_processes()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not name[:1].isupper():
            raise AttributeError(name)
        return self._unit._get(self._iface, name)

    def __repr__(self) -> str:
        return f"<{self._iface.rsplit('.', 1)[-1]} of {self._unit.name}>"


def _pid_map(unit: Unit) -> dict[int, int]:
    """PIDs in the manager's PID namespace -> PIDs in ours, for the unit's processes.

    The embedded manager runs in a PID namespace of its own (one level below ours);
    the unit's ``cgroup.procs`` read from here lists our PIDs, and each one's
    ``NSpid`` its PID one level down.
    """
    if locate.current().kind != "embedded":
        return {}
    out: dict[int, int] = {}
    for directory in unit.probe().dirs().values():
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                ours = [int(line) for line in f if line.strip()]
        except (OSError, ValueError):
            continue
        for pid in ours:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            levels = [int(x) for x in line.split()[1:]]
                            if len(levels) > 1:
                                out[levels[1]] = pid
                            break
            except (OSError, ValueError):
                continue
        if out:
            break
    return out


def _await_private_tmp_removal(unit: str, timeout: float = 2.0) -> None:
    """Wait until systemd has removed a stopped unit's ``PrivateTmp=`` directories.

    systemd deletes them asynchronously (in a child process) after the unit
    stopped; a caller that looks right after shutdown() must not find them.
    They are visible here when the manager shares our /tmp (host systemd, the
    embedded one); otherwise there is nothing to wait for.
    """
    pattern = [f"{d}/systemd-private-*-{glob.escape(unit)}-*" for d in ("/tmp", "/var/tmp")]
    deadline = time.monotonic() + timeout
    while any(glob.glob(p) for p in pattern) and time.monotonic() < deadline:
        time.sleep(0.01)


def _bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [v.encode() for v in value]
    return value


class TransientUnitPoolExecutor(Executor):
    """A pool of sandboxed workers in one systemd transient unit.

    ``TransientUnitPoolExecutor(max_workers=None, *presets, ns_options=None,
    initializer=None, initargs=(), max_tasks_per_child=None, **options)``
    (``max_workers`` by position or by keyword):
    ``ns_options`` is the concurrentd-style dict of directives; presets and
    keyword directives (and ``timeout``, ``trusted``) are as for ``@sandboxed``.
    pystemd's shape, a properties dict as the first argument (keys ``str`` or
    ``bytes``, directive or bus property names), is accepted too.
    ``initializer(*initargs)`` runs in each worker before its first task;
    ``max_tasks_per_child`` replaces a worker after that many tasks.
    The unit is started when the pool is built (``pool.unit``) and stopped by
    :meth:`shutdown`, which also removes its ``PrivateTmp=``. Tasks still
    submitted at interpreter exit run before it ends, as with
    ``ProcessPoolExecutor``; Ctrl-C (KeyboardInterrupt) in a ``with`` block or
    in :meth:`shutdown` cancels the queued tasks and stops the running ones.

    Raises configuration errors before any unit exists; :class:`UnitFailedError`
    or :class:`ManagerError` when the unit cannot be started.
    """

    def __init__(
        self,
        *presets: Any,
        max_workers: int | None = None,
        ns_options: Mapping[str, Any] | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
        user_mode: bool = False,
        **options: Any,
    ) -> None:
        rest = list(presets)
        properties: Mapping[Any, Any] | None = None
        if rest and isinstance(rest[0], Mapping):
            # pystemd: TransientUnitPoolExecutor(properties, user_mode=False, **kwargs)
            properties = rest.pop(0)
            if rest and isinstance(rest[0], bool):
                user_mode = rest.pop(0)
        elif rest and (rest[0] is None or type(rest[0]) is int):
            if max_workers is not None:
                raise TypeError("max_workers given both by position and by keyword")
            max_workers = rest.pop(0)
        if user_mode:
            raise ConfigurationError(
                "user_mode=True (pystemd's per-user manager) is not supported: sandboxed "
                "starts units with the system manager, or the embedded one; drop user_mode"
            )
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers <= 0):
            raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
        if max_tasks_per_child is not None and (
            not isinstance(max_tasks_per_child, int)
            or isinstance(max_tasks_per_child, bool)
            or max_tasks_per_child < 1
        ):
            raise ConfigurationError(
                f"invalid max_tasks_per_child {max_tasks_per_child!r}; accepted: an int >= 1, "
                "or None to keep workers"
            )
        if initializer is not None and not callable(initializer):
            raise ConfigurationError(f"initializer must be callable, got {initializer!r}")
        merged = dict(ns_options or {})
        raw = list(options.pop("raw", ()))
        if properties is not None:
            directives, extra = _pystemd_properties(properties)
            for name, value in directives.items():
                if name in merged and merged[name] != value:
                    raise ConfigurationError(
                        f"{name} is given twice, in the properties dict and in ns_options; "
                        "give it once"
                    )
                merged[name] = value
            raw += extra
        self._max_workers = max_workers or min(32, os.cpu_count() or 1)
        self.options = OptionSet.build(*rest, ns_options=merged, raw=raw, **options)
        self._sandbox = Sandbox(self.options, max_workers=self._max_workers)
        self._sandbox.max_calls = max_tasks_per_child
        self._init = (initializer, tuple(initargs)) if initializer is not None else None
        self._token = secrets.token_hex(8)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False
        self._aborting = False
        self._idle = 0
        self._running: dict[Future[Any], Callable[[], None]] = {}
        #: Seconds the latest task took (None until one ended): only short tasks batch.
        self._task_seconds: float | None = None
        self._sandbox.ensure_unit()
        self.unit = Unit(self._sandbox)
        _registry.at_exit(_finish_pools)
        _live.add(self)

    # -- Executor API -----------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` in the pool's unit; returns a :class:`SandboxFuture`."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _registry.exiting():
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            fut = SandboxFuture()
            self._queue.put((fut, fn, args, kwargs))
            self._adjust()
            return fut

    def _adjust(self) -> None:
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = alive
        if len(alive) < self._max_workers and self._queue.qsize() > self._idle:
            t = threading.Thread(target=self._run, name=f"sandboxed-pool-{len(alive)}", daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
            if item is _SHUTDOWN:
                self._queue.put(_SHUTDOWN)
                return
            batch = self._more(item)
            if len(batch) == 1:
                self._run_one(*batch[0])
            elif batch:
                self._run_batch(batch)
            del item, batch

    def _batch_size(self) -> int:
        """How many queued tasks one worker may take at once (1: no batching).

        Only tasks known to be short batch, and only as many as fit in
        :data:`BATCH_SECONDS`: a batch never holds a long task that an idle worker
        could be running, and a cold pool (no task ended yet) sends one at a time.
        """
        seconds = self._task_seconds
        if (
            seconds is None
            or seconds >= BATCH_SECONDS
            or self.options.timeout is not None
            or self._sandbox.max_calls is not None
            # Untrusted code: the tasks of a batch would share a process, where one
            # could speak for another (and each task gets a fresh process anyway).
            or self.options.safe_results
        ):
            return 1
        fits = int(BATCH_SECONDS / max(seconds, 1e-6))
        share = self._queue.qsize() // self._max_workers
        return max(1, min(MAX_BATCH, fits, share + 1))

    def _observe(self, seconds: float, tasks: int) -> None:
        # The latest figure, not an average: a long task stops batching at once, and a
        # short one after a slow start (a worker's first call includes its start-up)
        # lets batches grow at once.
        self._task_seconds = seconds / max(tasks, 1)

    def _more(self, first: Any) -> list[Any]:
        """``first`` and, when short tasks are queued, a fair share of them (all marked running)."""
        items = [first]
        size = self._batch_size()
        while len(items) < size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _SHUTDOWN:
                self._queue.put(_SHUTDOWN)
                break
            items.append(item)
        return [it for it in items if it[0].set_running_or_notify_cancel()]

    def _task(self, fn: Any) -> Any:
        """What the worker runs for ``fn``: ``fn`` itself, or ``fn`` after the initializer."""
        if self._init is None:
            return fn
        import functools

        init, initargs = self._init
        return functools.partial(initialized, self._token, init, initargs, fn)

    def _on_start(self, fut: Future[Any]) -> Callable[[Callable[[], None]], None]:
        def register(cancel: Callable[[], None]) -> None:
            self._running[fut] = cancel
            if self._aborting:
                cancel()

        return register

    def _run_one(self, fut: SandboxFuture, fn: Any, args: Any, kwargs: Any) -> None:
        if self._aborting:
            fut.set_exception(_interrupted())
            return
        t0 = time.monotonic()
        try:
            self._sandbox.check_reachable(fn)
            result = self._sandbox.call(
                self._task(fn),
                args,
                kwargs,
                stats=self.options.accounting,
                on_start=self._on_start(fut),
            )
        except BaseException as e:  # noqa: BLE001
            fut.stats = last_call_stats()
            trim(e)
            fut.set_exception(_interrupted() if self._aborting else e)
        else:
            fut.stats = last_call_stats()
            fut.set_result(result)
        finally:
            self._running.pop(fut, None)
            self._observe(time.monotonic() - t0, 1)

    def _run_batch(self, batch: list[Any]) -> None:
        """Run queued tasks in one round trip; each future still gets its own outcome.

        The worker streams each task's outcome as it ends, so a worker that dies
        mid-batch fails only the task it was running; the tasks after it never
        started and are run again, one by one.
        """
        safe = bool(self.options.safe_results)
        ready = []
        for task in batch:
            try:
                self._sandbox.check_reachable(task[1])
            except BaseException as e:  # noqa: BLE001
                task[0].set_exception(e)
            else:
                ready.append(task)
        batch = ready
        calls = [(self._task(fn), args, kwargs) for _fut, fn, args, kwargs in batch]
        done: set[int] = set()

        def on_partial(index: object, ok: object, parts: list[bytearray]) -> None:
            # From the worker: check before trusting (in safe mode it runs untrusted code).
            if type(index) is not int or not 0 <= index < len(batch) or index in done:
                return
            done.add(index)
            flag, value = unpack((ok, [bytes(p) for p in parts]), safe)
            fut = batch[index][0]
            if flag:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        t0 = time.monotonic()
        try:
            self._sandbox.call(
                run_batch,
                (calls, safe),
                {},
                on_partial=on_partial,
                stats=self.options.accounting,
                on_start=self._on_start(batch[0][0]),
            )
        except SerializationError:
            # A task's function or arguments do not pickle (nothing ran): let each task
            # meet its own fate.
            for task in batch:
                self._run_one(*task)
            return
        except BaseException as e:  # noqa: BLE001 - the worker died, the unit failed...
            stats = last_call_stats()
            pending = [i for i in range(len(batch)) if i not in done]
            if pending:
                running = batch[pending[0]][0]
                running.stats = stats
                running.set_exception(_interrupted() if self._aborting else e)
                for i in pending[1:]:
                    self._run_one(*batch[i])
            return
        finally:
            self._running.pop(batch[0][0], None)
            self._observe(time.monotonic() - t0, len(batch))
        stats = last_call_stats()
        for fut, *_ in batch:
            fut.stats = stats
        for i, (fut, *_) in enumerate(batch):
            if i not in done:
                missing = RemoteError("<unknown>", "the worker sent no outcome for this task")
                fut.set_exception(missing)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Like ``Executor.map``; ``chunksize > 1`` sends that many calls per round trip."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        import functools

        results = super().map(
            functools.partial(process_chunk, fn),
            _chunks(iterables, chunksize),
            timeout=timeout,
        )
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; optionally cancel pending ones; stop the unit.

        With ``wait=True`` returns after running tasks finished and the unit is
        gone (its private /tmp removed).
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_queued()
            self._queue.put(_SHUTDOWN)
        if wait:
            try:
                self._finish()
            except KeyboardInterrupt:
                self._abort()
                raise
        else:
            threading.Thread(target=self._finish, daemon=True).start()

    def _cancel_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _SHUTDOWN:
                item[0].cancel()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._abort()
            return False
        self.shutdown(wait=True)
        return False

    def _abort(self) -> None:
        """Ctrl-C: cancel what is queued, stop what runs (its futures fail), stop the unit."""
        with self._lock:
            self._shutdown = True
            self._aborting = True
            self._cancel_queued()
            self._queue.put(_SHUTDOWN)
        for cancel in list(self._running.values()):
            with contextlib.suppress(Exception):
                cancel()
        self._finish()

    def _finish(self) -> None:
        for t in list(self._threads):
            t.join()
        name = self.unit.name
        self._sandbox.shutdown(wait=True)
        _live.discard(self)
        _await_private_tmp_removal(name)

    @property
    def last_stats(self) -> CallStats | None:
        return self._sandbox.last_stats
