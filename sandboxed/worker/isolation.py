"""Inside the unit: keeping calls out of each other's processes, and ending what a call left.

Every process of a unit runs as the same user, and a process may read and write the
memory of any other process of its user (``/proc/<pid>/mem``, ``process_vm_readv``,
``ptrace``) unless that one is *non-dumpable*. The supervisor makes itself
non-dumpable before it forks any worker, and workers inherit it, so that no call can
read or write another call's memory or the supervisor's. (A process the call starts
with ``exec`` is dumpable again: what a call hands to a program it runs is the
call's own business.)

The supervisor and each worker are also *child subreapers*: a process a call starts,
even one that double-forks to leave its parent, stays below the worker that ran the
call, and below the supervisor once that worker is gone. So the supervisor can end
everything a dead worker left (:func:`sweep`), and a worker everything a call started
(:func:`end_children`).

Both need ``prctl(2)``, which the standard library does not offer: it is called
through ctypes (imported by the supervisor after READY, so that a unit's start is
not held up by it).
"""

from __future__ import annotations

import os
import signal

from sandboxed.worker._util import suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Any

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_CHILD_SUBREAPER = 36

_prctl: Any = None
problem: str | None = "not set up yet"
"""Why calls of this unit are not isolated from each other, or None when they are."""


def protect_supervisor() -> None:
    """In the supervisor, before any fork: non-dumpable, and the reaper of every orphan."""
    global _prctl, problem
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _prctl = libc.prctl
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        if _prctl(PR_SET_DUMPABLE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        if _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER, 1) failed")
    except Exception as exc:  # noqa: BLE001 - reported to every untrusted call instead
        problem = f"the unit's processes cannot be made non-dumpable ({exc})"
        _prctl = None
        return
    problem = None


def protect_worker() -> None:
    """In a worker, right after the fork: the reaper of whatever its calls start."""
    if _prctl is not None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0)


def dumpable() -> bool:
    """Whether this process can be read by others of its user (the call may have changed it)."""
    return _prctl is None or _prctl(PR_GET_DUMPABLE, 0, 0, 0) != 0


def children() -> list[int]:
    """This process's children, whichever of its threads started them."""
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return pids


def sweep(keep: Collection[int]) -> list[int]:
    """SIGKILL every child but ``keep`` (the supervisor's workers); the pids signalled.

    Orphans of a dead worker are reparented to the supervisor before it learns of the
    death, so they are among these; their own children come next, when they die.
    """
    killed = []
    for pid in children():
        if pid in keep:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed


def end_children() -> None:
    """In a worker: end every process the calls started, and reap them (a subreaper
    gets its orphaned grandchildren, which are then ended in their turn)."""
    for _ in range(10_000):  # bounded: each round ends one generation
        pids = children()
        if not pids:
            return
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
