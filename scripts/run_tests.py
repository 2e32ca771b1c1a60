"""The whole test job: quality gates first, then the test suite against a real systemd.

Run through ``./dev test`` (README). Exits non-zero when any stage fails.
Extra arguments are passed to pytest (then the quality gates are skipped).
"""

from __future__ import annotations

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


def leftovers() -> list[str]:
    """Processes a test run must not leave behind: managers, buses, our workers."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    bad = []
    for line in out.splitlines()[1:]:
        args = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
        if (
            "sandboxed._worker" in args
            or "sandboxed._boot" in args
            or args.startswith(("/lib/systemd/systemd ", "/usr/bin/dbus-daemon --system"))
        ):
            bad.append(line.strip())
    return bad


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
            ("directive reference is current", [PY, "-m", "sandboxed._docgen", "--check"]),
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
    before = set(leftovers())
    tests_ok = stage(
        "pytest", [PY, "-m", "pytest", "-p", "no:cacheprovider", *(extra or ["tests"])]
    )
    left = [p for p in leftovers() if p not in before]
    if left:
        print("processes left behind by the test run:\n  " + "\n  ".join(left), flush=True)
        ok = False
    if not ok:
        print("quality gates or leftover checks FAILED (see above)", flush=True)
    return 0 if ok and tests_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
