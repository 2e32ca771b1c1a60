"""Helpers of the benchmark suite: statistics, the machine's description, /proc readers.

Pure where it can be (the statistics are unit-tested in tests/unit/test_bench_smoke.py);
the readers only read.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# -- statistics ------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """The median of repeated measurements and their spread (interquartile range, extremes)."""

    median: float
    p25: float
    p75: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Iterable[float]) -> Summary:
        xs = sorted(samples)
        if not xs:
            raise ValueError("no samples")
        return cls(
            median=percentile(xs, 50),
            p25=percentile(xs, 25),
            p75=percentile(xs, 75),
            low=xs[0],
            high=xs[-1],
            n=len(xs),
        )

    def scaled(self, factor: float) -> Summary:
        return Summary(
            self.median * factor,
            self.p25 * factor,
            self.p75 * factor,
            self.low * factor,
            self.high * factor,
            self.n,
        )


def fmt(value: float) -> str:
    """A number with three significant digits, no exponent for everyday magnitudes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass
class Figure:
    """One measured quantity of one contender (or why it could not be measured)."""

    group: str
    contender: str
    metric: str
    unit: str
    summary: Summary | None = None
    note: str = ""
    error: str = ""

    def cells(self) -> list[str]:
        if self.summary is None:
            return [self.group, self.contender, self.metric, "—", "—", self.error or self.note]
        s = self.summary
        spread = f"{fmt(s.p25)} – {fmt(s.p75)} (min {fmt(s.low)}, max {fmt(s.high)}, n={s.n})"
        return [
            self.group,
            self.contender,
            self.metric,
            f"{fmt(s.median)} {self.unit}",
            spread,
            self.note,
        ]


@dataclass
class Target:
    """A ratio between two figures of the same run, and the bound it must meet."""

    name: str
    ours: Figure
    theirs: Figure | None
    bound: float
    at_most: bool = True
    absolute: bool = False  # compare ``ours`` itself (not a ratio) with ``bound``
    extra: list[str] = field(default_factory=list)

    def value(self) -> float | None:
        if self.ours.summary is None:
            return None
        if self.absolute:
            return self.ours.summary.median
        if self.theirs is None or self.theirs.summary is None or not self.theirs.summary.median:
            return None
        return self.ours.summary.median / self.theirs.summary.median

    def met(self) -> bool | None:
        v = self.value()
        if v is None:
            return None
        return v <= self.bound if self.at_most else v >= self.bound


# -- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _systemd_version(prefix: Sequence[str]) -> str:
    for argv in ([*prefix, "systemctl", "--version"], ["systemctl", "--version"]):
        if not shutil.which(argv[0]):
            continue
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r"systemd (\d+)(?: \(([^)]*)\))?", out)
        if m:
            return m.group(2) or m.group(1)
    return "unknown"


def machine(prefix: Sequence[str], manager_kind: str) -> dict[str, str]:
    """What the figures were measured on (no host names or paths)."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical CPUs)",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "systemd": f"{_systemd_version(prefix)} ({manager_kind} manager)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load average at start": load,
    }


# -- /proc -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcMemory:
    """Resident memory of one process, in bytes: RSS, PSS and USS (its private pages)."""

    pid: int
    ppid: int
    name: str
    rss: int
    pss: int
    uss: int


def proc_memory(pid: int) -> ProcMemory | None:
    """Read /proc/PID/status and smaps_rollup (None if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        with open(f"/proc/{pid}/smaps_rollup") as f:
            rollup = {}
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    rollup[parts[0][:-1]] = int(parts[1]) * 1024
    except OSError:
        return None
    rss = int(status.get("VmRSS", "0 kB").split()[0]) * 1024
    return ProcMemory(
        pid=pid,
        ppid=int(status.get("PPid", "0").strip()),
        name=status.get("Name", "?").strip(),
        rss=rss,
        pss=rollup.get("Pss", rss),
        uss=rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0),
    )


def cgroup_pids(directory: str) -> list[int]:
    """Host PIDs of the processes in a cgroup directory (cgroup.procs)."""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def python_for_subprocess() -> str:
    return sys.executable
