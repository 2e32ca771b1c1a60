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

import glob
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from sandboxed._errors import RemoteError, SerializationError, trim
from sandboxed.directives.options import OptionSet
from sandboxed.runtime.client import manager_client
from sandboxed.runtime.pool import Sandbox
from sandboxed.runtime.stats import CallStats, last_call_stats
from sandboxed.systemd.cgroups import CgroupProbe
from sandboxed.worker.batch import process_chunk, run_batch, unpack

T = TypeVar("T")

_SHUTDOWN = object()
#: How systemd spells "not known" for a ``t`` property such as ``CPUUsageNSec``.
_UNKNOWN = 2**64 - 1


class SandboxFuture(Future[Any]):
    """A future of a sandboxed task; ``stats`` holds its resource figures once done."""

    stats: CallStats | None = None


MAX_BATCH = 128
"""At most this many queued tasks travel to a worker in one round trip."""


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables, strict=False)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Unit:
    """The live unit of a pool; attributes are read from systemd over D-Bus when accessed.

    As in pystemd (and concurrentd), string properties come back as ``bytes``:
    ``pool.unit.Id.decode()``. Any property of the Unit or Service interface can
    be read this way (``ActiveState``, ``MainPID``, ``CPUUsageNSec``,
    ``MemoryCurrent``, ``TasksCurrent``, ``ControlGroup``...).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._probe: CgroupProbe | None = None

    @property
    def name(self) -> str:
        """The unit's name as a ``str``."""
        return self._name

    def properties(self) -> dict[str, Any]:
        """All Unit and Service properties, as systemd reports them now."""
        client = manager_client()
        path = client.unit_path(self._name)
        props = client.get_all(path, "org.freedesktop.systemd1.Unit")
        props.update(client.get_all(path, "org.freedesktop.systemd1.Service"))
        if props.get("CPUUsageNSec") == _UNKNOWN:
            props["CPUUsageNSec"] = self._cgroup_cpu_ns()
        return dict(props)

    def _cgroup_cpu_ns(self) -> int:
        """The unit's CPU time from its cgroup, for when systemd cannot tell.

        systemd 252 on a hybrid cgroup layout reads CPU time from the v1
        ``cpuacct`` controller only, and reports "unknown" (2**64-1) when that
        controller is not attached to the unit; the cgroup2 ``cpu.stat`` has it.
        """
        if self._probe is None:
            from sandboxed.systemd import locate

            self._probe = CgroupProbe(self._name, locate.current(), manager_client)
        ns = self._probe.cpu_ns()
        return _UNKNOWN if ns is None else ns

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not name[:1].isupper():
            raise AttributeError(name)
        if name == "Id":
            return self._name.encode()
        client = manager_client()
        path = client.unit_path(self._name)
        for iface in ("org.freedesktop.systemd1.Unit", "org.freedesktop.systemd1.Service"):
            try:
                value = client.get_property(path, iface, name)
            except Exception:  # noqa: BLE001 - try the next interface
                continue
            if name == "CPUUsageNSec" and value == _UNKNOWN:
                return self._cgroup_cpu_ns()
            return _bytes(value)
        raise AttributeError(f"unit {self._name} has no property {name!r}")

    def __repr__(self) -> str:
        return f"<Unit {self._name}>"


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

    ``TransientUnitPoolExecutor(max_workers=None, *presets, ns_options=None, **options)``:
    ``ns_options`` is the concurrentd-style dict of directives; presets and
    keyword directives (and ``timeout``, ``trusted``) are as for ``@sandboxed``.
    The unit is started when the pool is built (``pool.unit``) and stopped by
    :meth:`shutdown`, which also removes its ``PrivateTmp=``.

    Raises configuration errors before any unit exists; :class:`UnitFailedError`
    or :class:`ManagerError` when the unit cannot be started.
    """

    def __init__(
        self,
        max_workers: int | Any | None = None,
        *presets: Any,
        ns_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if max_workers is not None and not isinstance(max_workers, int):
            presets = (max_workers, *presets)
            max_workers = None
        if max_workers is not None and max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
        self._max_workers = max_workers or min(32, os.cpu_count() or 1)
        self.options = OptionSet.build(*presets, ns_options=ns_options, **options)
        self._sandbox = Sandbox(self.options, max_workers=self._max_workers)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False
        unit = self._sandbox.ensure_unit()
        self.unit = Unit(unit.name)

    # -- Executor API -----------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` in the pool's unit; returns a :class:`SandboxFuture`."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            fut = SandboxFuture()
            self._queue.put((fut, fn, args, kwargs))
            self._adjust()
            return fut

    def _adjust(self) -> None:
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = alive
        if len(alive) < self._max_workers and self._queue.qsize() > self._idle_threads():
            t = threading.Thread(target=self._run, name=f"sandboxed-pool-{len(alive)}", daemon=True)
            t.start()
            self._threads.append(t)

    def _idle_threads(self) -> int:
        return getattr(self, "_idle", 0)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle = getattr(self, "_idle", 0) + 1
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

    def _more(self, first: Any) -> list[Any]:
        """``first`` and, when tasks are queued, a fair share of them (all marked running)."""
        items = [first]
        # A per-call timeout is per task: such pools never batch.
        if self.options.timeout is None:
            share = min(MAX_BATCH, self._queue.qsize() // self._max_workers)
            while len(items) <= share:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _SHUTDOWN:
                    self._queue.put(_SHUTDOWN)
                    break
                items.append(item)
        return [it for it in items if it[0].set_running_or_notify_cancel()]

    def _run_one(self, fut: SandboxFuture, fn: Any, args: Any, kwargs: Any) -> None:
        try:
            result = self._sandbox.call(fn, args, kwargs, stats=self.options.accounting)
        except BaseException as e:  # noqa: BLE001
            fut.stats = last_call_stats()
            trim(e)
            fut.set_exception(e)
        else:
            fut.stats = last_call_stats()
            fut.set_result(result)

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
        calls = [(fn, args, kwargs) for _fut, fn, args, kwargs in batch]
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

        try:
            self._sandbox.call(
                run_batch,
                (calls, safe),
                {},
                on_partial=on_partial,
                stats=self.options.accounting,
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
                running.set_exception(e)
                for i in pending[1:]:
                    self._run_one(*batch[i])
            return
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
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _SHUTDOWN:
                        item[0].cancel()
            self._queue.put(_SHUTDOWN)
        if wait:
            self._finish()
        else:
            threading.Thread(target=self._finish, daemon=True).start()

    def _finish(self) -> None:
        for t in list(self._threads):
            t.join()
        self._sandbox.shutdown(wait=True)
        _await_private_tmp_removal(self.unit.name)

    @property
    def last_stats(self) -> CallStats | None:
        return self._sandbox.last_stats
