"""``sandboxed ls``, ``stop`` and ``gc``: the live sandbox units of every process.

``ls`` lists them with their caller, CPU time and memory, ``stop`` stops
some of them and ``gc`` stops those whose caller is gone. Importing this
module also registers ``run`` and ``doctor`` (their own modules).

Unit names embed the caller's pid (``sandboxed-<key>-<pid>-<rand>.service``,
see :meth:`Sandbox._new_unit_name`): that is how ``gc`` tells leftovers from
units still in use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from sandboxed._errors import ConfigurationError, ManagerNotFoundError
from sandboxed.cli.options import Command

UNIT_PATTERN = "sandboxed-*.service"
_NAME = re.compile(r"^sandboxed-(?P<key>[^-]+)-(?P<pid>\d+)-(?P<rand>[0-9a-z]+)\.service$")
_UNKNOWN = 2**64 - 1
SERVICE_IFACE = "org.freedesktop.systemd1.Service"


# -- ls ---------------------------------------------------------------------------------------


def caller_pid(unit: str) -> int | None:
    """The pid of the process that created a sandbox unit, from its name."""
    m = _NAME.match(unit)
    return int(m.group("pid")) if m else None


def _pid_started_at(pid: int) -> float | None:
    """Wall-clock start time of ``pid`` (seconds), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    ticks = int(fields[19])
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def caller_alive(unit: str, created_usec: int | None) -> bool | None:
    """Is the unit's caller alive? None when the name does not say who the caller is.

    A pid that exists but started after the unit was created is a reused pid:
    the real caller is gone.
    """
    pid = caller_pid(unit)
    if pid is None:
        return None
    started = _pid_started_at(pid)
    if started is None:
        return False
    # /proc start times are rounded to clock ticks and btime to seconds: allow 2 s.
    return not (created_usec and started > created_usec / 1e6 + 2)


def _client() -> Any:
    """The manager connection of these commands, which never boot a manager: with
    none running they raise :class:`ManagerNotFoundError` (there is nothing to see)."""
    from sandboxed.runtime.client import manager_client
    from sandboxed.systemd import locate

    locate.current(start_embedded=False)
    return manager_client()


def sandbox_units() -> list[dict[str, Any]]:
    """The loaded ``sandboxed-*`` units with their state, caller and resource use."""
    from sandboxed._errors import DBusError
    from sandboxed.systemd import locate
    from sandboxed.systemd.cgroups import CgroupProbe

    client = _client()
    out = []
    for row in client.list_units([UNIT_PATTERN]):
        name, description, _load, active, sub = (str(x) for x in row[:5])
        try:
            unit = client.get_unit_properties(name)
            svc = (
                client.get_unit_properties(name, SERVICE_IFACE) if name.endswith(".service") else {}
            )
        except DBusError:
            continue  # it went away while we looked
        created = int(unit.get("ActiveEnterTimestamp") or unit.get("InactiveExitTimestamp") or 0)

        def known(value: Any) -> int | None:
            return None if value in (None, _UNKNOWN) else int(value)

        cpu = known(svc.get("CPUUsageNSec"))
        mem = known(svc.get("MemoryCurrent"))
        tasks = known(svc.get("TasksCurrent"))
        if cpu is None and svc.get("ControlGroup"):
            # No CPUAccounting= in this manager: read the cgroup directly.
            try:
                cpu = CgroupProbe(name, locate.current(), _client).cpu_ns()
            except Exception:  # a figure we cannot read is shown as "-"
                cpu = None
        out.append(
            {
                "unit": name,
                "description": description,
                "active": active,
                "sub": sub,
                "caller_pid": caller_pid(name),
                "caller_alive": caller_alive(name, created),
                "created_usec": created,
                "main_pid": known(svc.get("MainPID")),
                "cpu_nsec": cpu,
                "memory_bytes": mem,
                "tasks": tasks,
            }
        )
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def _ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object per unit")


def _ls(ns: argparse.Namespace) -> int:
    try:
        units = sandbox_units()
    except ManagerNotFoundError as e:
        if not ns.json:
            print(f"no sandbox units: {e}")
        return 0
    if ns.json:
        for u in units:
            print(json.dumps(u, sort_keys=True))
        return 0
    if not units:
        print("no sandbox units")
        return 0
    rows = [("UNIT", "STATE", "CALLER", "CPU", "MEMORY", "TASKS")]
    for u in units:
        caller = "-" if u["caller_pid"] is None else str(u["caller_pid"])
        if u["caller_alive"] is False:
            caller += " (gone)"
        cpu = "-" if u["cpu_nsec"] is None else f"{u['cpu_nsec'] / 1e9:.2f}s"
        tasks = "-" if u["tasks"] is None else str(u["tasks"])
        rows.append(
            (u["unit"], f"{u['active']}/{u['sub']}", caller, cpu, _size(u["memory_bytes"]), tasks)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


# -- stop and gc ----------------------------------------------------------------------------


def _stop_units(names: Sequence[str]) -> list[str]:
    """Stop (and forget, if failed) each unit; returns the names that were loaded."""
    client = _client()
    stopped = []
    for name in names:
        result = client.stop_unit(name, wait=True, timeout=30)
        client.reset_failed_unit(name)
        if result != "gone":
            stopped.append(name)
    return stopped


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("units", nargs="+", metavar="UNIT", help="sandbox unit names (see `ls`)")


def _stop(ns: argparse.Namespace) -> int:
    names = []
    for u in ns.units:
        name = u if u.endswith(".service") else u + ".service"
        if not name.startswith("sandboxed-"):
            raise ConfigurationError(
                f"{u!r} is not a sandbox unit; accepted: names starting with 'sandboxed-' "
                "(use systemctl for other units)"
            )
        names.append(name)
    try:
        loaded = {u["unit"] for u in sandbox_units()}
    except ManagerNotFoundError as e:
        for n in names:
            print(f"sandboxed stop: error: no such sandbox unit: {n} ({e})", file=sys.stderr)
        return 1
    missing = [n for n in names if n not in loaded]
    for n in _stop_units([n for n in names if n in loaded]):
        print(f"stopped {n}")
    for n in missing:
        print(f"sandboxed stop: error: no such sandbox unit: {n}", file=sys.stderr)
    return 1 if missing else 0


def _gc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="stop every sandbox unit, also those in use")
    p.add_argument("-n", "--dry-run", action="store_true", help="only say what would be stopped")


def _gc(ns: argparse.Namespace) -> int:
    victims = []
    try:
        units = sandbox_units()
    except ManagerNotFoundError as e:
        print(f"nothing to collect: {e}")
        return 0
    for u in units:
        if ns.all:
            why = "--all"
        elif u["active"] == "failed":
            why = "failed"
        elif u["caller_alive"] is False:
            why = f"caller pid {u['caller_pid']} is gone"
        else:
            continue
        victims.append((u["unit"], why))
    if not victims:
        print("nothing to collect")
        return 0
    for name, why in victims:
        print(f"{'would stop' if ns.dry_run else 'stopping'} {name} ({why})")
    if not ns.dry_run:
        t0 = time.monotonic()
        done = _stop_units([n for n, _ in victims])
        print(f"stopped {len(done)} unit(s) in {time.monotonic() - t0:.1f} s")
    return 0


LS = Command("list live sandbox units with their caller, CPU time and memory", _ls_args, _ls)
STOP = Command("stop sandbox units by name", _stop_args, _stop)
GC = Command(
    "stop leftover sandbox units: failed ones and those whose caller is gone", _gc_args, _gc
)
