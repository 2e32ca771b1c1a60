"""Per-call resource figures, and the one place a thread's last figures are kept.

The figures come from the unit's cgroup on the host side
(:mod:`sandboxed.systemd.cgroups`), not from the worker, which runs untrusted
code. When several calls run in the same unit at once, each call's figures
cover the whole unit during that call.
"""

from __future__ import annotations

import threading

import attrs

from sandboxed.systemd.cgroups import Usage


@attrs.frozen
class CallStats:
    """What one call used.

    ``cpu_time`` (user+system seconds), ``wall_time`` (seconds), ``peak_memory``
    (bytes, the cgroup's high-water mark during the call, or None), ``io_read_bytes``
    and ``io_write_bytes`` (block I/O, or None), ``tasks`` (tasks in the unit
    at the end of the call, or its peak where the kernel reports one).
    """

    cpu_time: float
    wall_time: float
    peak_memory: int | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    tasks: int | None
    unit: str

    @classmethod
    def of(cls, usage: Usage, wall_time: float, unit: str) -> CallStats:
        """The figures of one call, from its unit's cgroup usage during the call."""
        return cls(
            cpu_time=usage.cpu_time,
            wall_time=wall_time,
            peak_memory=usage.peak_memory,
            io_read_bytes=usage.io_read_bytes,
            io_write_bytes=usage.io_write_bytes,
            tasks=usage.tasks,
            unit=unit,
        )


_thread = threading.local()


def record(stats: CallStats | None) -> None:
    """Keep ``stats`` as this thread's last call's figures."""
    _thread.last = stats


def last_call_stats() -> CallStats | None:
    """Resource figures of the last sandboxed call made by this thread (or None)."""
    return getattr(_thread, "last", None)
