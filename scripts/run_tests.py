"""The whole test job: quality gates first, then the test suite against a real systemd.

Run through ``./dev test`` (README). Exits non-zero when any stage fails.
Extra arguments are passed to pytest (then the quality gates are skipped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def stage(name: str, argv: list[str]) -> bool:
    print(f"==> {name}: {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(argv, cwd=ROOT)
    print(
        f"<== {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    return rc == 0


def become_subreaper() -> None:
    """Adopt every orphan of the test run, so that what it leaves behind is ours to see.

    The machine may be shared: other people's managers and workers must not count
    as this run's leftovers, and ours must not escape the count by being orphaned
    (an embedded manager's keeper is started in a session of its own).
    """
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            args = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            continue
        procs[int(entry)] = (int(fields[1]), args.decode(errors="replace"))
    return procs


def leftovers() -> list[str]:
    """Processes a test run must not leave behind: what it started and orphaned
    (managers, buses), and workers of sandboxed units on a host systemd."""
    me = os.getpid()
    host_systemd = Path("/run/systemd/system").is_dir()
    procs = _processes()
    bad = []
    for pid, (ppid, args) in sorted(procs.items()):
        ours = ppid == me
        # Units of a host's systemd are its children, not ours: find them by name.
        host_worker = host_systemd and "sandboxed.worker.main" in args
        if ours or host_worker:
            bad.append(f"{pid} {args}")
    return bad


def settled_leftovers(before: set[str], grace: float = 5.0) -> list[str]:
    """What is still running ``grace`` seconds after the tests ended (orphans reaped).

    A helper that exits on its own once the test process is gone (multiprocessing's
    resource tracker sees EOF, a manager finishes powering off) is not a leftover.
    """
    deadline = time.monotonic() + grace
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        left = [p for p in leftovers() if p not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def main() -> int:
    extra = sys.argv[1:]
    ok = True
    if not extra:
        gates = [
            (
                "ruff check",
                [
                    PY,
                    "-m",
                    "ruff",
                    "check",
                    "sandboxed",
                    "tests",
                    "recipes",
                    "benchmarks",
                    "scripts",
                ],
            ),
            (
                "ruff format",
                [
                    PY,
                    "-m",
                    "ruff",
                    "format",
                    "--check",
                    "sandboxed",
                    "tests",
                    "recipes",
                    "benchmarks",
                    "scripts",
                ],
            ),
            ("mypy --strict", [PY, "-m", "mypy", "--strict", "sandboxed"]),
            ("layering contracts", [str(Path(PY).parent / "lint-imports")]),
            (
                "directive reference is current",
                [PY, "-m", "sandboxed.directives.docgen", "--check"],
            ),
        ]
        if (ROOT / "mkdocs.yml").exists() and shutil.which("mkdocs", path=str(Path(PY).parent)):
            gates.append(
                (
                    "docs build",
                    [
                        str(Path(PY).parent / "mkdocs"),
                        "build",
                        "--strict",
                        "-q",
                        "-d",
                        "/tmp/sandboxed-site",
                    ],
                )
            )
        for name, argv in gates:
            ok = stage(name, argv) and ok
    become_subreaper()
    before = set(leftovers())
    tests_ok = stage(
        "pytest", [PY, "-m", "pytest", "-p", "no:cacheprovider", *(extra or ["tests"])]
    )
    left = settled_leftovers(before)
    if left:
        print("processes left behind by the test run:\n  " + "\n  ".join(left), flush=True)
        ok = False
    if not ok:
        print("quality gates or leftover checks FAILED (see above)", flush=True)
    return 0 if ok and tests_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
