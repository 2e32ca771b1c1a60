#!/usr/bin/env python3
"""sandboxed's benchmarks, measured side by side in one run (``./dev bench``).

Compares, on this machine and in the same run:

- cold start: a new option set's first call against ``systemd-run --wait --pipe``
  with the same properties running ``python -c pass``, and against the first
  result of ``pystemd.futures.TransientUnitPoolExecutor``;
- warm latency of a no-op call (p50, p99) against ``ProcessPoolExecutor(1)``
  and pystemd's executor;
- throughput of small tasks through ``TransientUnitPoolExecutor(2)`` against
  ``ProcessPoolExecutor(2)``, with ``submit`` and with ``map(chunksize=...)``;
- a 64 MiB ``bytes`` argument and result round trip against ``ProcessPoolExecutor``;
- memory of an idle sandbox (worker and supervisor, RSS/PSS/USS read from
  /proc through the unit's cgroup), units started per second, and 100 distinct
  option sets live at once.

Contenders are measured in alternating rounds so that a busy machine slows all
of them alike; every figure is the median of the rounds with its spread. A
peer that cannot run here (pystemd) is recorded with the reason.

Prints a table and writes docs/benchmarks.md and docs/benchmarks.png.
``--quick`` runs a small version of everything (a smoke run, not figures to quote).
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures as cf
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The tasks must be importable by reference in every worker: workers get our sys.path.
sys.path.insert(0, HERE)

import bench_tasks as tasks  # noqa: E402
import decorated  # noqa: E402
from _bench import (  # noqa: E402
    Figure,
    Summary,
    Target,
    cgroup_pids,
    fmt,
    machine,
    percentile,
    proc_memory,
)

import sandboxed  # noqa: E402
from sandboxed import NoNetwork, ReadOnly, TransientUnitPoolExecutor  # noqa: E402
from sandboxed.runtime import registry  # noqa: E402
from sandboxed.runtime.client import manager_client  # noqa: E402
from sandboxed.runtime.plan import contained, merged_directives  # noqa: E402
from sandboxed.systemd import locate  # noqa: E402
from sandboxed.systemd.cgroups import CgroupProbe  # noqa: E402

MiB = 1 << 20
# The option set of the cold-start comparison: what a typical user asks for.
COLD_PRESETS = (NoNetwork, ReadOnly)

# Functions of this script: run as ``./dev bench`` they are ``__main__`` functions, which
# travel by value (what a user's script or notebook cell defines).
BIG_GLOBAL = os.urandom(10 * MiB)


def main_noop(*args: object) -> None:
    """A no-op defined in ``__main__``."""
    return None


def main_big_global() -> int:
    """A ``__main__`` function that reads a 10 MB global."""
    return len(BIG_GLOBAL)


@contextlib.contextmanager
def quiet_gc() -> Any:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Suite:
    def __init__(self, quick: bool, only: list[str] | None = None) -> None:
        self.quick = quick
        self.only = only or []
        self.figures: list[Figure] = []
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.location = locate.current()
        self.prefix = list(self.location.tool_prefix)
        self.round_id = 0
        self.pystemd_missing: str | None = None

    def fig(
        self,
        group: str,
        contender: str,
        metric: str,
        unit: str,
        samples: list[float] | None = None,
        *,
        note: str = "",
        error: str = "",
        scale: float = 1.0,
    ) -> Figure:
        summary = Summary.of(samples).scaled(scale) if samples else None
        f = Figure(group, contender, metric, unit, summary, note, error)
        self.figures.append(f)
        return f

    def unique_env(self) -> dict[str, str]:
        self.round_id += 1
        return {"SANDBOXED_BENCH_ROUND": f"{os.getpid()}-{self.round_id}"}

    # -- cold start --------------------------------------------------------------------------

    def systemd_run_argv(self, options: Any) -> list[str]:
        # The sandbox's own directives, containment baseline included: the same unit.
        directives = merged_directives(contained(options))[0]
        argv = [*self.prefix, "systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
        for d in directives:
            for assignment in d.assignments():
                argv += ["-p", assignment]
        return [*argv, sys.executable, "-c", "pass"]

    def cold(self) -> None:
        rounds = 3 if self.quick else 12
        ours: list[float] = []
        theirs: list[float] = []
        pystemd: list[float] = []
        error = pystemd_error = ""
        for _ in range(rounds):
            fn = sandboxed.sandboxed(*COLD_PRESETS, env=self.unique_env())(tasks.noop)
            sb = fn.sandbox
            ours.append(timed(fn))
            sb.shutdown(wait=True)
            opts = sandboxed.OptionSet.build(*COLD_PRESETS, env=self.unique_env())
            argv = self.systemd_run_argv(opts)
            t = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            elapsed = time.perf_counter() - t
            if proc.returncode != 0:
                error = f"exit status {proc.returncode}: {proc.stderr.strip()[:200]}"
                break
            theirs.append(elapsed)
            if not pystemd_error:
                r = self.run_pystemd(0)
                if "first" in r:
                    pystemd.append(r["first"])
                else:
                    pystemd_error = r.get("error", "no result")
        # Names only: the values include this machine's paths (the reachability bind mounts).
        props = ", ".join(f"{d.name}=" for d in merged_directives(contained(opts))[0])
        a = self.fig(
            "cold start",
            "sandboxed",
            "new option set -> first result",
            "ms",
            ours,
            scale=1e3,
            note="NoNetwork | ReadOnly, a no-op function",
        )
        b = self.fig(
            "cold start",
            "systemd-run --wait --pipe",
            "python -c pass, same properties",
            "ms",
            theirs,
            scale=1e3,
            error=error,
            note="run through the manager's tool prefix, with the sandbox's own directives: "
            + props,
        )
        self.fig(
            "cold start",
            "pystemd TransientUnitPoolExecutor",
            "pool start -> first result",
            "ms",
            pystemd,
            scale=1e3,
            error=pystemd_error,
            note="forks the caller into a `sleep infinity` unit: no interpreter start, "
            "but NoNewPrivileges=, SystemCallFilter=, User=... do not apply (DESIGN.md)",
        )
        self.targets.append(Target("cold first call / systemd-run python -c pass", a, b, 1.0))

    # -- pystemd ------------------------------------------------------------------------------

    def ensure_pystemd(self) -> str:
        """Import pystemd, installing it into this venv on demand; '' or why not."""
        probe = [sys.executable, "-c", "import pystemd.futures"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return ""
        pip = [sys.executable, "-m", "pip", "install", "-q", "pystemd"]
        try:
            proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0 and "libsystemd" in proc.stderr and os.geteuid() == 0:
                # It builds against libsystemd: Debian's headers and pkg-config, then again.
                print(
                    "   installing libsystemd-dev and pkg-config for pystemd's build",
                    file=sys.stderr,
                )
                apt = [
                    "apt-get",
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "libsystemd-dev",
                    "pkg-config",
                ]
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
                subprocess.run(apt, capture_output=True, timeout=600, env=env)
                proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"not installable: {exc}"
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])[:300]
            hint = ""
            if "libsystemd" in proc.stderr:
                hint = (
                    " (it builds against libsystemd: install Debian's"
                    " libsystemd-dev and pkg-config)"
                )
            return f"not installable: pip install pystemd failed{hint}: {tail}"
        if subprocess.run(probe, capture_output=True).returncode != 0:
            return "not importable after installation"
        return ""

    def run_pystemd(self, calls: int) -> dict[str, Any]:
        """One pystemd probe (a pool's first result, then ``calls`` warm calls), or its error."""
        if self.pystemd_missing is None:
            self.pystemd_missing = self.ensure_pystemd()
        if self.pystemd_missing:
            return {"error": self.pystemd_missing}
        timeout = 60
        # pystemd moves its forked workers into the unit by PID (AttachProcesses, then
        # /proc/MainPID/ns/*): that is only right inside the manager's PID namespace, where
        # the tool prefix runs it (and where the system bus is the manager's).
        argv = [*self.prefix, sys.executable, os.path.join(HERE, "_pystemd_probe.py"), str(calls)]
        before = self.pystemd_units()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=HERE,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            hung = True
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        result: dict[str, Any] = lines[-1] if lines else {}
        if hung:
            result["error"] = (
                f"hung: no {'further ' if result else ''}answer within {timeout} s "
                f"(at step {result.get('step', 'start the pool')!r}; killed)"
            )
        elif not result:
            tail = " ".join(err.strip().splitlines()[-2:])[:300]
            result = {"error": f"exited with status {proc.returncode}: {tail}"}
        if hung:
            # A pool that hung may have left its unit (`sleep infinity`) behind.
            for unit in self.pystemd_units() - before:
                subprocess.run(
                    [*self.prefix, "systemctl", "stop", unit], capture_output=True, timeout=60
                )
        return result

    def pystemd_units(self) -> set[str]:
        argv = [
            *self.prefix,
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "pystemd*",
        ]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return set()
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def pystemd_warm(self) -> None:
        rounds = 3 if self.quick else 10
        per_round = 200 if self.quick else 1000
        r = self.run_pystemd(rounds * per_round)
        err = r.get("error", "")
        warm = r.get("warm") or []
        chunks = [warm[i * per_round : (i + 1) * per_round] for i in range(rounds)]
        chunks = [c for c in chunks if c]
        note = (
            f"no-op; {rounds} rounds of {per_round} calls in a process of its own, after "
            "the other contenders (pystemd's pool is a ProcessPoolExecutor whose workers "
            "were forked from the caller and moved into the unit)"
        )
        self.fig(
            "warm call",
            "pystemd TransientUnitPoolExecutor(1)",
            "p50",
            "us",
            [percentile(c, 50) for c in chunks] or None,
            scale=1e6,
            error=err,
            note=note,
        )
        self.fig(
            "warm call",
            "pystemd TransientUnitPoolExecutor(1)",
            "p99",
            "us",
            [percentile(c, 99) for c in chunks] or None,
            scale=1e6,
            error=err,
        )

    # -- warm latency ---------------------------------------------------------------------------

    def warm(self) -> None:
        rounds = 3 if self.quick else 10
        per_round = 200 if self.quick else 1000
        fn = decorated.noop
        contenders: dict[str, Callable[[], Any]] = {}
        ppe = cf.ProcessPoolExecutor(max_workers=1)
        pool = TransientUnitPoolExecutor(1, NoNetwork)
        contenders["sandboxed: decorated call"] = fn
        contenders["TransientUnitPoolExecutor(1): submit().result()"] = lambda: pool.submit(
            tasks.noop
        ).result()
        contenders["ProcessPoolExecutor(1): submit().result()"] = lambda: ppe.submit(
            tasks.noop
        ).result()
        try:
            for call in contenders.values():
                for _ in range(100):
                    call()
            p50: dict[str, list[float]] = {k: [] for k in contenders}
            p99: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(rounds):
                for name, call in contenders.items():
                    lat = []
                    with quiet_gc():
                        for _ in range(per_round):
                            t = time.perf_counter()
                            call()
                            lat.append(time.perf_counter() - t)
                    p50[name].append(percentile(lat, 50))
                    p99[name].append(percentile(lat, 99))
        finally:
            ppe.shutdown()
            pool.shutdown()
        figs = {}
        for name in contenders:
            figs[name] = self.fig(
                "warm call",
                name,
                "p50",
                "us",
                p50[name],
                scale=1e6,
                note=f"no-op; median over {rounds} rounds of {per_round} calls",
            )
            self.fig("warm call", name, "p99", "us", p99[name], scale=1e6)
        ppe_fig = figs["ProcessPoolExecutor(1): submit().result()"]
        self.targets.append(
            Target(
                "warm p50 (decorated call) / ProcessPoolExecutor(1)",
                figs["sandboxed: decorated call"],
                ppe_fig,
                0.5,
            )
        )
        self.targets.append(
            Target(
                "warm p50 (executor submit) / ProcessPoolExecutor(1)",
                figs["TransientUnitPoolExecutor(1): submit().result()"],
                ppe_fig,
                0.5,
                extra=["informational: the target is set for the call"],
            )
        )

    # -- throughput ---------------------------------------------------------------------------

    def throughput(self) -> None:
        rounds = 2 if self.quick else 5
        n = 2000 if self.quick else 10_000
        chunk = 100

        def by_submit(ex: cf.Executor) -> float:
            t = time.perf_counter()
            futures = [ex.submit(tasks.square, i) for i in range(n)]
            total = sum(f.result() for f in futures)
            elapsed = time.perf_counter() - t
            assert total == sum(i * i for i in range(n))
            return n / elapsed

        def by_map(ex: cf.Executor) -> float:
            t = time.perf_counter()
            total = sum(ex.map(tasks.square, range(n), chunksize=chunk))
            elapsed = time.perf_counter() - t
            assert total == sum(i * i for i in range(n))
            return n / elapsed

        ours = TransientUnitPoolExecutor(2, NoNetwork)
        ppe = cf.ProcessPoolExecutor(max_workers=2)
        results: dict[str, list[float]] = {k: [] for k in ("os", "ps", "om", "pm")}
        try:
            for ex in (ours, ppe):
                list(ex.map(tasks.square, range(200)))  # both workers up
            for _ in range(rounds):
                results["os"].append(by_submit(ours))
                results["ps"].append(by_submit(ppe))
                results["om"].append(by_map(ours))
                results["pm"].append(by_map(ppe))
        finally:
            ours.shutdown()
            ppe.shutdown()
        note = f"{n:,} calls of square(i); median over {rounds} rounds"
        a = self.fig(
            "throughput",
            "TransientUnitPoolExecutor(2)",
            "submit",
            "tasks/s",
            results["os"],
            note=note,
        )
        b = self.fig(
            "throughput", "ProcessPoolExecutor(2)", "submit", "tasks/s", results["ps"], note=note
        )
        c = self.fig(
            "throughput",
            "TransientUnitPoolExecutor(2)",
            f"map(chunksize={chunk})",
            "tasks/s",
            results["om"],
            note=note,
        )
        d = self.fig(
            "throughput",
            "ProcessPoolExecutor(2)",
            f"map(chunksize={chunk})",
            "tasks/s",
            results["pm"],
            note=note,
        )
        self.targets.append(
            Target("throughput (submit) / ProcessPoolExecutor(2)", a, b, 1.5, at_most=False)
        )
        self.targets.append(
            Target(
                "throughput (map, chunksize) / ProcessPoolExecutor(2)",
                c,
                d,
                1.5,
                at_most=False,
                extra=["informational"],
            )
        )

    # -- 64 MiB round trip ---------------------------------------------------------------------

    def big(self) -> None:
        rounds = 3 if self.quick else 8
        size = (8 if self.quick else 64) * MiB
        blob = os.urandom(size)
        fn = decorated.echo
        ppe = cf.ProcessPoolExecutor(max_workers=1)
        ours: list[float] = []
        theirs: list[float] = []
        try:
            assert fn(b"x") == b"x" and ppe.submit(tasks.echo, b"x").result() == b"x"
            for _ in range(rounds):
                out: list[Any] = []
                ours.append(timed(lambda out=out: out.append(fn(blob))))
                assert len(out[0]) == size
                out.clear()
                theirs.append(
                    timed(lambda out=out: out.append(ppe.submit(tasks.echo, blob).result()))
                )
                assert len(out[0]) == size
                out.clear()
        finally:
            ppe.shutdown()
        what = f"{size // MiB} MiB bytes argument and result"
        a = self.fig("large payload", "sandboxed: decorated call", what, "ms", ours, scale=1e3)
        b = self.fig("large payload", "ProcessPoolExecutor(1)", what, "ms", theirs, scale=1e3)
        self.targets.append(
            Target(f"{size // MiB} MiB round trip / ProcessPoolExecutor(1)", a, b, 1.0)
        )

    # -- memory -----------------------------------------------------------------------------------

    def unit_memory(self, sb: Any) -> tuple[list[Any], int | None]:
        """(per-process memory, cgroup memory) of a started sandbox's unit."""
        unit = sb._unit
        probe = (
            unit.probe
            if unit is not None and unit.probe is not None
            else CgroupProbe(sb.unit_name, self.location, manager_client)
        )
        dirs = probe.dirs()
        pids: list[int] = []
        for hierarchy in ("unified", "pids", "memory", "cpu"):
            if hierarchy in dirs:
                pids = cgroup_pids(dirs[hierarchy])
                if pids:
                    break
        procs = [m for m in (proc_memory(p) for p in pids) if m is not None]
        usage = None
        for hierarchy, name in (("unified", "memory.current"), ("memory", "memory.usage_in_bytes")):
            d = dirs.get(hierarchy)
            if d and os.path.exists(os.path.join(d, name)):
                with open(os.path.join(d, name)) as f:
                    usage = int(f.read().strip())
                break
        return procs, usage

    def memory(self) -> None:
        rounds = 2 if self.quick else 5
        worker_rss, worker_uss, worker_pss, sup_rss, sup_uss, ppe_rss, ppe_uss = (
            [] for _ in range(7)
        )
        deco_rss: list[float] = []
        deco_uss: list[float] = []
        for _ in range(rounds):
            # A plain function: the worker as sandboxed makes it.
            pool = TransientUnitPoolExecutor(1, NoNetwork, env=self.unique_env())
            for _ in range(20):
                pool.submit(tasks.noop).result()
            time.sleep(0.2)  # idle
            procs, _usage = self.unit_memory(pool._sandbox)  # noqa: SLF001
            pids = {p.pid for p in procs}
            for p in procs:
                if p.ppid in pids:
                    worker_rss.append(p.rss)
                    worker_uss.append(p.uss)
                    worker_pss.append(p.pss)
                else:
                    sup_rss.append(p.rss)
                    sup_uss.append(p.uss)
            pool.shutdown()
            # A decorated function: its module imports sandboxed in the worker too.
            fn = sandboxed.sandboxed(NoNetwork, env=self.unique_env())(tasks.noop)
            for _ in range(20):
                fn()
            time.sleep(0.2)
            procs, _usage = self.unit_memory(fn.sandbox)
            pids = {p.pid for p in procs}
            for p in procs:
                if p.ppid in pids:
                    deco_rss.append(p.rss)
                    deco_uss.append(p.uss)
            fn.sandbox.shutdown()
            ppe = cf.ProcessPoolExecutor(max_workers=1)
            for _ in range(20):
                ppe.submit(tasks.noop).result()
            time.sleep(0.2)
            for pid in list(ppe._processes):  # noqa: SLF001 - the worker's pid
                m = proc_memory(pid)
                if m is not None:
                    ppe_rss.append(m.rss)
                    ppe_uss.append(m.uss)
            ppe.shutdown()
        w = self.fig(
            "memory",
            "sandboxed worker (idle)",
            "RSS",
            "MiB",
            worker_rss,
            scale=1 / MiB,
            note="a plain function (executor); read from /proc via the unit's cgroup.procs",
        )
        self.fig(
            "memory",
            "sandboxed worker (idle)",
            "USS (private)",
            "MiB",
            worker_uss,
            scale=1 / MiB,
            note="the pages it does not share with its supervisor",
        )
        self.fig("memory", "sandboxed worker (idle)", "PSS", "MiB", worker_pss, scale=1 / MiB)
        self.fig(
            "memory",
            "sandboxed worker of a decorated function (idle)",
            "RSS",
            "MiB",
            deco_rss,
            scale=1 / MiB,
            note="unpickling the decorated function imports sandboxed's caller side "
            "(decorator, options, attrs, wrapt, asyncio) in the worker",
        )
        self.fig(
            "memory",
            "sandboxed worker of a decorated function (idle)",
            "USS (private)",
            "MiB",
            deco_uss,
            scale=1 / MiB,
        )
        self.fig(
            "memory",
            "sandboxed supervisor",
            "RSS",
            "MiB",
            sup_rss,
            scale=1 / MiB,
            note="one per unit, whatever its number of workers",
        )
        self.fig("memory", "sandboxed supervisor", "USS (private)", "MiB", sup_uss, scale=1 / MiB)
        self.fig(
            "memory",
            "ProcessPoolExecutor worker (idle)",
            "RSS",
            "MiB",
            ppe_rss,
            scale=1 / MiB,
            note="for comparison: a fork of this benchmark process",
        )
        self.fig(
            "memory",
            "ProcessPoolExecutor worker (idle)",
            "USS (private)",
            "MiB",
            ppe_uss,
            scale=1 / MiB,
        )
        self.targets.append(Target("idle worker RSS (MiB)", w, None, 20.0, absolute=True))

    def units_per_second(self) -> None:
        rounds = 2 if self.quick else 5
        n = 4 if self.quick else 16
        rates: list[float] = []
        for _ in range(rounds):
            sbs = [
                registry.get(sandboxed.OptionSet.build(NoNetwork, env=self.unique_env()))
                for _ in range(n)
            ]
            for sb in sbs:
                sb.base_properties()  # the option set's planning is not unit start-up
            t = time.perf_counter()
            for sb in sbs:
                sb.ensure_unit()
            rates.append(n / (time.perf_counter() - t))
            for sb in sbs:
                sb.shutdown(wait=True)
        self.fig(
            "scale",
            "sandboxed",
            "units started per second",
            "units/s",
            rates,
            note=f"{n} units one after another (to READY of the supervisor)",
        )

    def many_option_sets(self) -> None:
        n = 10 if self.quick else 100
        threads = 8
        fns = [sandboxed.sandboxed(NoNetwork, env=self.unique_env())(tasks.noop) for _ in range(n)]
        firsts: list[float] = []
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(threads) as tp:
            firsts = list(tp.map(timed, fns))
        total = time.perf_counter() - t0
        time.sleep(0.3)
        rss = uss = cgroup = 0
        for fn in fns:
            procs, usage = self.unit_memory(fn.sandbox)
            rss += sum(p.rss for p in procs)
            uss += sum(p.uss for p in procs)
            cgroup += usage or 0
        for fn in fns:
            fn.sandbox.shutdown(wait=False)
        registry.shutdown()
        self.fig(
            "scale",
            f"{n} option sets live at once",
            "time to first result, each",
            "ms",
            firsts,
            scale=1e3,
            note=f"first calls from {threads} threads at once",
        )
        self.fig("scale", f"{n} option sets live at once", "until every first result", "s", [total])
        self.fig(
            "scale",
            f"{n} option sets live at once",
            "RSS of all their processes",
            "MiB",
            [rss / MiB],
            note="supervisor + one worker per unit, summed (shared pages counted each time)",
        )
        self.fig(
            "scale",
            f"{n} option sets live at once",
            "USS of all their processes",
            "MiB",
            [uss / MiB],
        )
        if cgroup:
            self.fig(
                "scale",
                f"{n} option sets live at once",
                "cgroup memory, summed",
                "MiB",
                [cgroup / MiB],
                note="the units' memory controllers (page cache included)",
            )

    # -- by-value functions, threads, many option sets (issue 17) ---------------------------------

    def by_value_warm(self) -> None:
        rounds = 3 if self.quick else 10
        per_round = 200 if self.quick else 1000
        ppe = cf.ProcessPoolExecutor(max_workers=1)
        contenders: dict[str, Callable[[], Any]] = {
            "ProcessPoolExecutor(1): submit().result()": lambda: ppe.submit(tasks.noop).result(),
            "sandboxed: importable function": decorated.noop,
            "sandboxed: importable function, accounting=False": sandboxed.sandboxed(
                NoNetwork, accounting=False
            )(tasks.noop),
            "sandboxed: __main__ function": sandboxed.sandboxed(NoNetwork)(main_noop),
            "sandboxed: __main__ function reading a 10 MB global": sandboxed.sandboxed(NoNetwork)(
                main_big_global
            ),
            "ProcessPoolExecutor(1): the same 10 MB-global function": lambda: ppe.submit(
                main_big_global
            ).result(),
        }
        p50: dict[str, list[float]] = {k: [] for k in contenders}
        p99: dict[str, list[float]] = {k: [] for k in contenders}
        try:
            for call in contenders.values():
                for _ in range(50):
                    call()
            for _ in range(rounds):
                for name, call in contenders.items():
                    lat = []
                    with quiet_gc():
                        for _ in range(per_round):
                            t = time.perf_counter()
                            call()
                            lat.append(time.perf_counter() - t)
                    p50[name].append(percentile(lat, 50))
                    p99[name].append(percentile(lat, 99))
        finally:
            ppe.shutdown()
        figs = {}
        note = f"no-op; median over {rounds} rounds of {per_round} calls, contenders interleaved"
        for name in contenders:
            figs[name] = self.fig(
                "by-value warm call", name, "p50", "us", p50[name], scale=1e6, note=note
            )
            self.fig("by-value warm call", name, "p99", "us", p99[name], scale=1e6)
        ppe_fig = figs["ProcessPoolExecutor(1): submit().result()"]
        self.targets.append(
            Target(
                "warm p50, __main__ function / ProcessPoolExecutor(1)",
                figs["sandboxed: __main__ function"],
                ppe_fig,
                0.5,
            )
        )
        self.targets.append(
            Target(
                "warm p50, importable function / ProcessPoolExecutor(1)",
                figs["sandboxed: importable function"],
                ppe_fig,
                0.4,
            )
        )
        self.targets.append(
            Target(
                "warm p50, importable, accounting=False / ProcessPoolExecutor(1)",
                figs["sandboxed: importable function, accounting=False"],
                ppe_fig,
                0.4,
                extra=["informational"],
            )
        )
        self.targets.append(
            Target(
                "warm p50, __main__ function with a 10 MB global / ProcessPoolExecutor(1) with it",
                figs["sandboxed: __main__ function reading a 10 MB global"],
                figs["ProcessPoolExecutor(1): the same 10 MB-global function"],
                1.0,
                extra=["informational: the global travels once per worker, then stays there"],
            )
        )

    def isolation(self) -> None:
        """Warm calls of untrusted code (a fresh process per call) next to trusted code
        (a warm worker) and ProcessPoolExecutor, interleaved in one run."""
        rounds = 3 if self.quick else 10
        per_round = 50 if self.quick else 300
        ppe = cf.ProcessPoolExecutor(max_workers=1)
        untrusted = sandboxed.sandboxed(NoNetwork, trusted=False)(tasks.noop)
        hardened = sandboxed.sandboxed(sandboxed.Hardened)(tasks.noop)
        contenders: dict[str, Callable[[], Any]] = {
            "ProcessPoolExecutor(1): submit().result()": lambda: ppe.submit(tasks.noop).result(),
            "sandboxed, trusted (warm worker)": decorated.noop,
            "sandboxed, trusted=False (fresh process per call)": untrusted,
            "sandboxed, Hardened (fresh process per call)": hardened,
        }
        p50: dict[str, list[float]] = {k: [] for k in contenders}
        p99: dict[str, list[float]] = {k: [] for k in contenders}
        try:
            for call in contenders.values():
                for _ in range(20):
                    call()
            for _ in range(rounds):
                for name, call in contenders.items():
                    lat = []
                    with quiet_gc():
                        for _ in range(per_round):
                            t = time.perf_counter()
                            call()
                            lat.append(time.perf_counter() - t)
                    p50[name].append(percentile(lat, 50))
                    p99[name].append(percentile(lat, 99))
        finally:
            ppe.shutdown()
        figs = {}
        note = f"no-op; median over {rounds} rounds of {per_round} calls, contenders interleaved"
        for name in contenders:
            figs[name] = self.fig(
                "per-call isolation", name, "p50", "us", p50[name], scale=1e6, note=note
            )
            self.fig("per-call isolation", name, "p99", "us", p99[name], scale=1e6)
        fresh = figs["sandboxed, trusted=False (fresh process per call)"]
        self.targets.append(
            Target(
                "warm p50, untrusted (fresh process) / trusted (warm worker)",
                fresh,
                figs["sandboxed, trusted (warm worker)"],
                10.0,
                extra=["informational: the price of no state surviving a call"],
            )
        )
        self.targets.append(
            Target(
                "warm p50, untrusted (fresh process) / ProcessPoolExecutor(1)",
                fresh,
                figs["ProcessPoolExecutor(1): submit().result()"],
                10.0,
                extra=["informational"],
            )
        )

    def by_value_cold(self) -> None:
        rounds = 3 if self.quick else 10
        main_t: list[float] = []
        imp_t: list[float] = []
        theirs: list[float] = []
        error = ""
        for _ in range(rounds):
            for target, out in ((main_noop, main_t), (tasks.noop, imp_t)):
                fn = sandboxed.sandboxed(*COLD_PRESETS, env=self.unique_env())(target)
                sb = fn.sandbox
                out.append(timed(fn))
                sb.shutdown(wait=True)
            opts = sandboxed.OptionSet.build(*COLD_PRESETS, env=self.unique_env())
            t = time.perf_counter()
            proc = subprocess.run(
                self.systemd_run_argv(opts), capture_output=True, text=True, timeout=120
            )
            elapsed = time.perf_counter() - t
            if proc.returncode != 0:
                error = f"exit status {proc.returncode}: {proc.stderr.strip()[:200]}"
                break
            theirs.append(elapsed)
        note = "NoNetwork | ReadOnly; a new option set's first call; rounds interleaved"
        a = self.fig(
            "by-value cold start",
            "sandboxed: __main__ function",
            "first result",
            "ms",
            main_t,
            scale=1e3,
            note=note,
        )
        b = self.fig(
            "by-value cold start",
            "sandboxed: importable function",
            "first result",
            "ms",
            imp_t,
            scale=1e3,
            note=note,
        )
        c = self.fig(
            "by-value cold start",
            "systemd-run --wait --pipe",
            "python -c pass, same properties",
            "ms",
            theirs,
            scale=1e3,
            error=error,
        )
        self.targets.append(
            Target("cold first call, __main__ function / systemd-run python -c pass", a, c, 0.6)
        )
        self.targets.append(
            Target("cold first call, importable function / systemd-run python -c pass", b, c, 0.5)
        )

    def threads(self) -> None:
        rounds = 2 if self.quick else 5
        calls = 20 if self.quick else 60
        nthreads = 32
        fn = sandboxed.sandboxed(NoNetwork, workers=2, env=self.unique_env())(tasks.noop)
        single: list[float] = []
        many: list[float] = []
        firsts: list[float] = []

        def burst(record_first: bool) -> None:
            barrier = threading.Barrier(nthreads)

            def run() -> None:
                barrier.wait()
                for i in range(calls):
                    t = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t
                    many.append(dt)
                    if i == 0 and record_first:
                        firsts.append(dt)

            ts = [threading.Thread(target=run) for _ in range(nthreads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        fn()
        burst(False)  # both workers up
        many.clear()
        for _ in range(rounds):
            for _ in range(calls * 4):
                single.append(timed(fn))
            burst(True)
        fn.sandbox.shutdown()
        note = f"{nthreads} threads x {calls} calls of one no-op, workers=2; {rounds} rounds"
        s50 = self.fig(
            "threads",
            "1 thread",
            "call p50",
            "us",
            [percentile(single, 50)],
            scale=1e6,
            note=f"{calls * 4} calls a round, between the bursts",
        )
        s99 = self.fig("threads", "1 thread", "call p99", "us", [percentile(single, 99)], scale=1e6)
        smax = self.fig("threads", "1 thread", "slowest call", "ms", [max(single)], scale=1e3)
        self.fig(
            "threads",
            f"{nthreads} threads",
            "call p50",
            "us",
            [percentile(many, 50)],
            scale=1e6,
            note=note,
        )
        m99 = self.fig(
            "threads", f"{nthreads} threads", "call p99", "us", [percentile(many, 99)], scale=1e6
        )
        mmax = self.fig(
            "threads", f"{nthreads} threads", "slowest call", "ms", [max(many)], scale=1e3
        )
        self.fig(
            "threads",
            f"{nthreads} threads",
            "first call of a thread, slowest",
            "ms",
            [max(firsts)],
            scale=1e3,
        )
        excess = self.fig(
            "threads",
            f"{nthreads} threads",
            "slowest call - slowest single-thread call",
            "ms",
            [max(many) - max(single)],
            scale=1e3,
        )
        self.fig(
            "threads",
            f"{nthreads} threads",
            "p99 / (16 x single-thread p50)",
            "x",
            [percentile(many, 99) / (16 * percentile(single, 50))],
            note="each call queues behind ~15 others (32 callers, 2 workers): queueing itself",
        )
        self.targets.append(
            Target(
                "32 threads: slowest call - slowest single-thread call (ms)",
                excess,
                None,
                100.0,
                absolute=True,
            )
        )
        self.targets.append(Target("32 threads: call p99 / single-thread p99", m99, s99, 3.0))
        _ = (s50, smax, mmax)

    def option_sets_under_ulimit(self) -> None:
        n = 100 if self.quick else 1000
        soft = 128 if self.quick else 1024
        argv = [sys.executable, os.path.join(HERE, "_many_units.py"), str(n), str(soft)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, cwd=HERE)
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        what = f"{n:,} option sets one after another, ulimit -n {soft}"
        if not lines:
            self.fig(
                "scale",
                what,
                "option sets that worked",
                "",
                None,
                error=f"exit status {proc.returncode}: {proc.stderr.strip()[-300:]}",
            )
            return
        r = lines[-1]
        ok = self.fig(
            "scale",
            what,
            "option sets that worked",
            "",
            [float(r["ok"])],
            note=r["error"] or "all of them",
        )
        if r["firsts"]:
            self.fig("scale", what, "first call, each", "ms", r["firsts"], scale=1e3)
        self.fig("scale", what, "descriptors open at the end", "", [float(r["fds"])])
        self.fig("scale", what, "caller RSS at the end", "MiB", [r["rss"] / MiB])
        self.fig(
            "scale",
            what,
            "units live at the end",
            "",
            [float(r["live"])],
            note="the sandbox cache's bound",
        )
        self.targets.append(
            Target(f"{what}: all succeed", ok, None, float(n), at_most=False, absolute=True)
        )

    def cold_with_live_units(self) -> None:
        n = 100 if self.quick else 1000
        rounds = 3 if self.quick else 8
        client = manager_client()

        def cold_once() -> float:
            fn = sandboxed.sandboxed(*COLD_PRESETS, env=self.unique_env())(tasks.noop)
            sb = fn.sandbox
            try:
                return timed(fn)
            finally:
                sb.shutdown(wait=True)

        # Half the rounds without the units before they start, half after they stop.
        none: list[float] = [cold_once() for _ in range(rounds // 2)]
        names = [f"sandboxed-bench-sleeper-{os.getpid()}-{i}.service" for i in range(n)]
        # Live units where sandboxes' units go (the default slice), each a `sleep` with the
        # directives of the sandboxes' option set: what a thousand cached sandboxes cost
        # the manager, without their memory. (Units of other directives cost more: a new
        # unit that needs a cgroup controller its siblings lack, such as PrivateDevices='s
        # devices controller, makes the manager realize every sibling again.)
        like = registry.get(sandboxed.OptionSet.build(*COLD_PRESETS, env=self.unique_env()))
        try:
            for name in names:
                props = [
                    ("ExecStart", "a(sasb)", [("/bin/sleep", ["/bin/sleep", "3600"], False)]),
                    ("CollectMode", "s", "inactive-or-failed"),
                    *like.base_properties(),
                ]
                # One at a time, each start job done: a queue of pending jobs would be
                # measured instead of the cost of the units once they run.
                client.start_transient_unit(name, props, wait=True)
            live = [cold_once() for _ in range(rounds)]
        finally:
            for name in names:
                with contextlib.suppress(Exception):
                    client.stop_unit(name, wait=True)
        none += [cold_once() for _ in range(rounds - rounds // 2)]
        a = self.fig(
            "scale",
            f"cold first call, {n:,} live units",
            "first result",
            "ms",
            live,
            scale=1e3,
            note="sleeping units with the sandboxes' directives, in their slice",
        )
        b = self.fig(
            "scale", "cold first call, no other unit", "first result", "ms", none, scale=1e3
        )
        self.targets.append(Target(f"cold call with {n:,} live units / with none", a, b, 1.2))

    # -- run and report ---------------------------------------------------------------------------

    # -- the containment baseline's cost ------------------------------------------------------

    def containment_cost(self) -> None:
        """Cold start and warm call with the baseline against the same without it
        (containment=False), in alternating rounds."""
        rounds = 3 if self.quick else 12
        cold: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for on in (True, False):
                fn = sandboxed.sandboxed(*COLD_PRESETS, containment=on, env=self.unique_env())(
                    tasks.noop
                )
                cold[on].append(timed(fn))
                fn.sandbox.shutdown(wait=True)
        warm_rounds = 3 if self.quick else 10
        per_round = 200 if self.quick else 1000
        calls = {True: decorated.noop, False: decorated.noop_uncontained}
        warm: dict[bool, list[float]] = {True: [], False: []}
        for call in calls.values():
            for _ in range(100):
                call()
        for _ in range(warm_rounds):
            for on, call in calls.items():
                lat = []
                with quiet_gc():
                    for _ in range(per_round):
                        t = time.perf_counter()
                        call()
                        lat.append(time.perf_counter() - t)
                warm[on].append(percentile(lat, 50))
        figs = {}
        for on in (True, False):
            label = "baseline" if on else "containment=False"
            figs["cold", on] = self.fig(
                "containment baseline",
                f"sandboxed, {label}",
                "cold: new option set -> first result",
                "ms",
                cold[on],
                scale=1e3,
                note="NoNetwork | ReadOnly, a no-op; alternating rounds",
            )
            figs["warm", on] = self.fig(
                "containment baseline",
                f"sandboxed, {label}",
                "warm p50",
                "us",
                warm[on],
                scale=1e6,
                note=f"NoNetwork, a no-op; median over {warm_rounds} rounds of {per_round}",
            )
        for kind in ("cold", "warm"):
            self.targets.append(
                Target(
                    f"{kind} with the containment baseline / without",
                    figs[kind, True],
                    figs[kind, False],
                    1.15,
                    extra=["informational: the baseline is not optional; within noise"],
                )
            )

    def run(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("cold start", self.cold),
            ("containment cost", self.containment_cost),
            ("warm calls", self.warm),
            ("pystemd warm calls", self.pystemd_warm),
            ("throughput", self.throughput),
            ("64 MiB round trip", self.big),
            ("memory", self.memory),
            ("units per second", self.units_per_second),
            ("many option sets", self.many_option_sets),
            ("by-value warm", self.by_value_warm),
            ("by-value cold", self.by_value_cold),
            ("isolation", self.isolation),
            ("threads", self.threads),
            ("option sets under ulimit", self.option_sets_under_ulimit),
            ("cold with live units", self.cold_with_live_units),
        ]
        if self.only:
            unknown = set(self.only) - {name for name, _ in steps}
            if unknown:
                raise SystemExit(
                    f"unknown step(s) {sorted(unknown)}; steps: {[n for n, _ in steps]}"
                )
            steps = [(name, step) for name, step in steps if name in self.only]
        for name, step in steps:
            t = time.perf_counter()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one failing step must not lose the rest
                self.fig(
                    name,
                    "sandboxed",
                    "(step failed)",
                    "",
                    None,
                    error=f"{type(exc).__name__}: {exc}",
                )
            print(f"   {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        registry.shutdown()


def table(rows: list[list[str]], header: list[str]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def target_rows(suite: Suite) -> list[list[str]]:
    rows = []
    for t in suite.targets:
        v = t.value()
        met = t.met()
        bound = ("≤ " if t.at_most else "≥ ") + fmt(t.bound) + ("" if t.absolute else "×")
        value = "—" if v is None else fmt(v) + ("" if t.absolute else "×")
        verdict = "—" if met is None else ("met" if met else "missed")
        rows.append([t.name, value, bound, verdict, "; ".join(t.extra)])
    return rows


def markdown(suite: Suite, info: dict[str, str], argv: list[str]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `./dev bench` (`benchmarks/run.py`"
        + (" --quick: a smoke run, not figures to quote" if suite.quick else "")
        + "). Every contender is measured in the same run, in alternating rounds; each "
        "figure is the median of its rounds, with the interquartile range and the extremes "
        "as its spread.",
        "",
        "## Machine",
        "",
        table([[k, v] for k, v in info.items()], ["", ""]),
        "",
        "## Targets (ratios of the same run)",
        "",
        table(target_rows(suite), ["target", "reached", "bound", "met?", "note"]),
        "",
        "## Figures",
        "",
        table(
            [f.cells() for f in suite.figures],
            ["group", "contender", "metric", "median", "spread: p25 – p75", "note"],
        ),
        "",
    ]
    if suite.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in suite.notes], ""]
    lines += ["![benchmarks](benchmarks.png)", ""]
    return "\n".join(lines)


def chart(suite: Suite, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("cold start", "first result (ms)", lambda f: f.group == "cold start"),
        ("warm call p50", "µs", lambda f: f.group == "warm call" and f.metric == "p50"),
        ("throughput", "tasks/s", lambda f: f.group == "throughput"),
        ("large payload", "ms", lambda f: f.group == "large payload"),
        ("idle worker memory", "MiB", lambda f: f.group == "memory" and f.metric == "RSS"),
    ]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 3.0 * len(groups)))
    for ax, (title, unit, pick) in zip(axes, groups, strict=True):
        chosen = [f for f in suite.figures if pick(f)]
        labels = [
            f"{f.contender}\n{f.metric}" if f.group == "throughput" else f.contender for f in chosen
        ]
        values = [f.summary.median if f.summary else 0 for f in chosen]
        lo = [f.summary.median - f.summary.p25 if f.summary else 0 for f in chosen]
        hi = [f.summary.p75 - f.summary.median if f.summary else 0 for f in chosen]
        colours = [
            "#2a7ab0" if f.contender.startswith(("sandboxed", "TransientUnit")) else "#999999"
            for f in chosen
        ]
        y = range(len(chosen))
        ax.barh(list(y), values, xerr=[lo, hi], color=colours, capsize=3)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel(unit, fontsize=8)
        for i, f in enumerate(chosen):
            text = fmt(f.summary.median) if f.summary else "not measured: see the table"
            ax.text(values[i], i, " " + text, va="center", fontsize=7)
    fig.suptitle("sandboxed vs its peers, same run (median, bars: p25–p75)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run of every step")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated step names to run (default: all); e.g. 'by-value warm,threads'",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="where benchmarks.md and benchmarks.png go (default: docs/; with --only: nowhere)",
    )
    args = parser.parse_args(argv)
    # The sandbox cannot write bytecode (ProtectSystem=, -B): give it fresh .pyc files, as an
    # installed package has, so that its start-up is not a compile.
    compileall.compile_dir(os.path.join(ROOT, "sandboxed"), quiet=1)
    compileall.compile_dir(HERE, quiet=1, maxlevels=0)
    suite = Suite(quick=args.quick, only=[x.strip() for x in args.only.split(",") if x.strip()])
    info = machine(suite.prefix, suite.location.kind)
    suite.run()
    rows = [f.cells() for f in suite.figures]
    print(table(rows, ["group", "contender", "metric", "median", "spread", "note"]))
    print()
    print(table(target_rows(suite), ["target", "reached", "bound", "met?", "note"]))
    if args.out is None and suite.only:
        return 0  # a partial run does not overwrite the full run's report
    args.out = args.out or os.path.join(ROOT, "docs")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "benchmarks.md"), "w") as f:
        f.write(markdown(suite, info, sys.argv))
    chart(suite, os.path.join(args.out, "benchmarks.png"))
    print(
        f"\nwrote {os.path.join(os.path.relpath(args.out, ROOT), 'benchmarks.md')} and .png",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
