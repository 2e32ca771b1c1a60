"""The process's sandboxes, one per option set, and their lifetime.

Sandboxes are created lazily on first call and shared by every function
with an equal option set. They are stopped at interpreter exit and by
:func:`shutdown`. A forked child starts with no sandbox of its own: it closes
its copies of the parent's channels (so that the parent's units still stop
when the parent dies) and never uses them.

The cache is bounded: at most ``max_units`` units run at once (default
:data:`DEFAULT_MAX_UNITS`, and never more than the descriptor limit allows:
each live unit holds a few descriptors in this process), the least recently
used idle one stopping when another starts; and a unit idle for
``idle_timeout`` seconds (default :data:`DEFAULT_IDLE_TIMEOUT`) is stopped.
A stopped unit's option set starts a new unit on its next call. Both are set
with :func:`configure_cache` or the ``SANDBOXED_MAX_UNITS`` and
``SANDBOXED_IDLE_TIMEOUT`` environment variables. Sandboxes owned by an
executor are not in this cache (the executor decides their lifetime).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sandboxed._errors import ConfigurationError
from sandboxed.runtime.client import reset_after_fork
from sandboxed.runtime.pool import Sandbox
from sandboxed.systemd import locate

DEFAULT_MAX_UNITS = 64
"""Units the cache keeps running at once, unless configured otherwise."""
DEFAULT_IDLE_TIMEOUT = 600.0
"""Seconds a unit may stay idle before it is stopped, unless configured otherwise."""
DESCRIPTORS_PER_UNIT = 16
"""What the bound assumes a live unit holds, at most, in this process (it holds ~7)."""
DESCRIPTORS_KEPT_FREE = 64

_lock = threading.Lock()
_sandboxes: dict[Any, Sandbox] = {}
_wake = threading.Condition(_lock)
_reaper: threading.Thread | None = None


def _from_env(name: str, default: float, kind: type) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < (1 if kind is int else 0):
        raise ConfigurationError(
            f"invalid {name}={raw!r}; accepted: "
            + ("a whole number >= 1" if kind is int else "a number of seconds >= 0")
        )
    return value


_max_units: int = _from_env("SANDBOXED_MAX_UNITS", DEFAULT_MAX_UNITS, int)
_idle_timeout: float | None = _from_env("SANDBOXED_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT, float)


_UNCHANGED: Any = object()


def configure_cache(*, max_units: int | None = None, idle_timeout: Any = _UNCHANGED) -> None:
    """Bound the cache of sandbox units this process keeps for decorated functions.

    ``max_units``: how many units run at once (an int >= 1; also capped by the
    descriptor limit, ``ulimit -n``); when another starts, the least recently used
    idle one is stopped. ``idle_timeout``: seconds (>= 0) after which an idle unit is
    stopped, or ``None`` for never. Omitted arguments keep their value. Defaults:
    :data:`DEFAULT_MAX_UNITS` units, :data:`DEFAULT_IDLE_TIMEOUT` seconds.

    Raises :class:`ConfigurationError` (a ``ValueError``) for a value out of range.
    """
    global _max_units, _idle_timeout

    if max_units is not None and (
        isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1
    ):
        raise ConfigurationError(f"invalid max_units {max_units!r}; accepted: an int >= 1")
    timeout_given = idle_timeout is not _UNCHANGED and idle_timeout is not None
    if timeout_given and (
        isinstance(idle_timeout, bool)
        or not isinstance(idle_timeout, int | float)
        or not idle_timeout >= 0
    ):
        raise ConfigurationError(
            f"invalid idle_timeout {idle_timeout!r}; accepted: seconds >= 0, or None (never)"
        )
    with _lock:
        if max_units is not None:
            _max_units = max_units
        if idle_timeout is not _UNCHANGED:
            _idle_timeout = None if idle_timeout is None else float(idle_timeout)
        _wake.notify_all()
    _enforce_bound(None)


def limits() -> dict[str, Any]:
    """The cache's settings, as :func:`configure_cache` takes them."""
    return {"max_units": _max_units, "idle_timeout": _idle_timeout}


def effective_max_units() -> int:
    """``max_units``, lowered to what the descriptor limit leaves room for."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return _max_units
    room = max(1, (soft - DESCRIPTORS_KEPT_FREE) // DESCRIPTORS_PER_UNIT)
    return min(_max_units, room)


def get(options: Any, max_workers: int | None = None) -> Sandbox:
    """The shared sandbox for ``options`` (created, not started, on first use).

    Sandboxes are keyed by ``options.key``, which leaves out the per-call
    timeout: functions that differ only in their timeout share a unit.
    """
    key = getattr(options, "key", options)
    sb = _sandboxes.get(key)
    if sb is not None and not sb.closed:
        return sb
    with _lock:
        sb = _sandboxes.get(key)
        if sb is None or sb.closed:
            # A sandbox shut down on its own (fn.sandbox.shutdown()) starts afresh.
            sb = Sandbox(options, max_workers=max_workers)
            sb.on_unit_started = _unit_started
            sb.on_shutdown = _drop
            _sandboxes[key] = sb
        return sb


def _drop(sb: Sandbox) -> None:
    """A sandbox shut down leaves the registry (its option set gets a new one)."""
    with _lock:
        key = getattr(sb.options, "key", sb.options)
        if _sandboxes.get(key) is sb:
            del _sandboxes[key]


def _unit_started(sb: Sandbox) -> None:
    with _lock:
        # Forgotten while idle but called again through a reference held meanwhile: it
        # is back in the cache, so that it is bounded and stopped like the others.
        key = getattr(sb.options, "key", sb.options)
        if key not in _sandboxes and not sb.closed:
            _sandboxes[key] = sb
    _enforce_bound(sb)
    _ensure_reaper()


def _enforce_bound(started: Sandbox | None) -> None:
    """Stop the least recently used idle units beyond the bound."""
    limit = effective_max_units()
    with _lock:
        live = [s for s in _sandboxes.values() if s.unit_name is not None]
    if len(live) <= limit:
        return
    live.sort(key=lambda s: s.last_used)
    excess = len(live) - limit
    for s in live:
        if excess <= 0:
            break
        if s is not started and s.release_unit():
            excess -= 1


def _ensure_reaper() -> None:
    global _reaper
    with _lock:
        if _reaper is not None and _reaper.is_alive():
            return
        _reaper = threading.Thread(target=_reap_idle, name="sandboxed-reaper", daemon=True)
        _reaper.start()


def _reap_idle() -> None:
    """Stop units idle past ``idle_timeout``; forget unit-less sandboxes idle as long."""
    while True:
        with _lock:
            timeout = _idle_timeout
            sandboxes = list(_sandboxes.items())
        now = time.monotonic()
        next_check = 60.0
        if timeout is not None:
            for key, sb in sandboxes:
                due = sb.last_used + timeout
                if due > now:
                    next_check = min(next_check, due - now)
                elif sb.unit_name is not None:
                    if not sb.release_unit():
                        next_check = min(next_check, max(timeout, 0.05))
                else:
                    with _lock:
                        if _sandboxes.get(key) is sb and sb.unit_name is None:
                            del _sandboxes[key]
        with _lock:
            if not _sandboxes:
                global _reaper
                _reaper = None
                return
            _wake.wait(max(next_check, 0.05))


def live() -> list[Sandbox]:
    with _lock:
        return list(_sandboxes.values())


def shutdown(wait: bool = True, reason: str | None = None) -> None:
    """Stop every sandbox unit this process started (they restart on the next call).

    A call that a stopped unit cuts short raises WorkerDiedError naming ``reason``.
    """
    with _lock:
        sandboxes = list(_sandboxes.values())
        _sandboxes.clear()
    for sb in sandboxes:
        with contextlib.suppress(Exception):
            sb.shutdown(wait=wait, reason=reason)


# -- interpreter exit ---------------------------------------------------------------------------

_exit_hooks: list[Callable[[], None]] = []
_exiting = False


def at_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` at interpreter exit, before the sandboxes stop (executors finish there)."""
    if hook not in _exit_hooks:
        _exit_hooks.append(hook)


def exiting() -> bool:
    """True once the interpreter has begun to exit."""
    return _exiting


def _on_interpreter_exit() -> None:
    # Run by threading before it joins non-daemon threads (as concurrent.futures does):
    # executors finish the tasks submitted to them, then every unit stops, so that a
    # thread blocked in a sandboxed call gets WorkerDiedError instead of holding up the
    # exit for ever.
    global _exiting
    _exiting = True
    for hook in list(_exit_hooks):
        with contextlib.suppress(Exception):
            hook()
    shutdown(reason="interpreter exit")


def _after_fork_in_child() -> None:
    global _lock, _wake, _reaper
    _lock = threading.Lock()
    _wake = threading.Condition(_lock)
    _reaper = None
    for sb in list(_sandboxes.values()):
        sb.abandon()
    _sandboxes.clear()
    reset_after_fork()
    locate.forget()


atexit.register(shutdown)
with contextlib.suppress(AttributeError, RuntimeError):  # RuntimeError: already exiting
    threading._register_atexit(_on_interpreter_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_after_fork_in_child)
