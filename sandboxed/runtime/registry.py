"""The process's sandboxes, one per option set, and their lifetime.

Sandboxes are created lazily on first call and shared by every function
with an equal option set. They are stopped at interpreter exit and by
:func:`shutdown`. A forked child starts with no sandbox of its own: it closes
its copies of the parent's channels (so that the parent's units still stop
when the parent dies) and never uses them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Any

from sandboxed.runtime.client import reset_after_fork
from sandboxed.runtime.pool import Sandbox
from sandboxed.systemd import locate

_lock = threading.Lock()
_sandboxes: dict[Any, Sandbox] = {}


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
            _sandboxes[key] = sb
        return sb


def shutdown(wait: bool = True) -> None:
    """Stop every sandbox unit this process started (they restart on the next call)."""
    with _lock:
        sandboxes = list(_sandboxes.values())
        _sandboxes.clear()
    for sb in sandboxes:
        with contextlib.suppress(Exception):
            sb.shutdown(wait=wait)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for sb in list(_sandboxes.values()):
        sb.abandon()
    _sandboxes.clear()
    reset_after_fork()
    locate.forget()


atexit.register(shutdown)
os.register_at_fork(after_in_child=_after_fork_in_child)
