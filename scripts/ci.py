"""The CI job (``.ci/run``): named passes, each running the test suite against one systemd.

    .ci/run                      every pass
    .ci/run host systemd-257     only these
    .ci/run --jobs 1             one pass at a time, output streamed
    .ci/run --list               the passes and what they run

Each pass is one row of ``PASSES``; to add one (say, a pass that runs the suite
from inside a booted namespace), add a row: a name, a line saying what it
checks, and the command. The quality gates run once, in the ``host`` pass
(``./dev test`` without arguments); the other passes run only the tests.

Passes run ``--jobs`` at a time (default 1: the three fit in the time budget
one after another, and the suite's CPU-quota checks measure shares of a CPU
that a second pass would compete for), each with its own embedded manager
(``SANDBOXED_EMBEDDED_DIR`` gets the pass's name appended) and its own log in
``.ci/logs/NAME.log``. The job fails if any pass fails; a summary with each
pass's wall time ends the output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".ci" / "logs"


@attrs.frozen
class Pass:
    name: str
    what: str
    argv: tuple[str, ...]


PASSES = (
    Pass(
        "host",
        "quality gates, then the whole suite on this machine's systemd",
        ("./dev", "test"),
    ),
    Pass(
        "host-path",
        "the systemd-facing tests again from inside a systemd-booted namespace, where "
        "PID 1 is systemd: the host path most users' machines take",
        (".venv/bin/python", "scripts/host_path.py", "tests/systemd"),
    ),
    Pass(
        "systemd-257",
        "the whole suite inside a fresh Debian 13 root (systemd 257)",
        ("scripts/systemd-root", "257", "--", "./dev", "test", "tests"),
    ),
    Pass(
        "systemd-254",
        "the whole suite inside a fresh Debian 12 + backports root (systemd 254)",
        ("scripts/systemd-root", "254", "--", "./dev", "test", "tests"),
    ),
)


@attrs.define
class Outcome:
    name: str
    rc: int | None = None
    seconds: float = 0.0


def run_pass(p: Pass, stream: bool, outcome: Outcome) -> None:
    env = dict(os.environ)
    base = env.get("SANDBOXED_EMBEDDED_DIR", "/run/sandboxed/ci")
    env["SANDBOXED_EMBEDDED_DIR"] = f"{base}-{p.name}"
    log = LOGS / f"{p.name}.log"
    t0 = time.monotonic()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            p.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if stream:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        outcome.rc = proc.wait()
    outcome.seconds = time.monotonic() - t0


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def main() -> int:
    ap = argparse.ArgumentParser(prog=".ci/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("passes", nargs="*", help="names of the passes to run (default: all)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("CI_JOBS", "1")))
    ap.add_argument("--list", action="store_true", help="list the passes and exit")
    args = ap.parse_args()
    by_name = {p.name: p for p in PASSES}
    if args.list:
        for p in PASSES:
            print(f"{p.name:14} {p.what}\n{'':14} $ {' '.join(p.argv)}")
        return 0
    unknown = [n for n in args.passes if n not in by_name]
    if unknown:
        ap.error(f"unknown pass {', '.join(unknown)}; known: {', '.join(by_name)}")
    chosen = [by_name[n] for n in args.passes] if args.passes else list(PASSES)
    jobs = max(1, args.jobs)
    LOGS.mkdir(parents=True, exist_ok=True)
    outcomes = [Outcome(p.name) for p in chosen]
    stream = jobs == 1 or len(chosen) == 1
    t0 = time.monotonic()
    pending = list(zip(chosen, outcomes, strict=True))
    running: list[tuple[threading.Thread, Outcome]] = []
    while pending or running:
        while pending and len(running) < jobs:
            p, o = pending.pop(0)
            print(f"==> pass {p.name}: {p.what}\n    $ {' '.join(p.argv)}", flush=True)
            t = threading.Thread(target=run_pass, args=(p, stream, o), daemon=True)
            t.start()
            running.append((t, o))
        time.sleep(0.5)
        for t, o in list(running):
            if not t.is_alive():
                running.remove((t, o))
                verdict = "ok" if o.rc == 0 else f"FAILED ({o.rc})"
                print(f"<== pass {o.name}: {verdict} in {o.seconds / 60:.1f} min", flush=True)
                if o.rc != 0 and not stream:
                    print(tail(LOGS / f"{o.name}.log"), flush=True)
    total = time.monotonic() - t0
    print("\nCI summary (wall time per pass; log in .ci/logs/NAME.log):")
    for o in outcomes:
        print(f"  {o.name:14} {'ok' if o.rc == 0 else 'FAILED':7} {o.seconds / 60:6.1f} min")
    print(f"  {'total':14} {'':7} {total / 60:6.1f} min (--jobs {jobs})", flush=True)
    return 0 if all(o.rc == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
