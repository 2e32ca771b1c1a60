"""Tasks for the issue-16 tests (light imports: they travel by reference)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_to(f: Any) -> None:
    f.write("overwritten")


def open_in_sandbox() -> Any:
    return open("/tmp/sbx16-result", "w")  # noqa: SIM115


def interleave_then_die(n: int, how: str) -> None:
    """Print ``n`` numbered lines alternately to stdout and stderr, then die ``how``."""
    for i in range(n):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)
    if how == "exit":
        os._exit(0)
    if how == "fd":
        os.write(1, b"fd-level last words\n")
        os._exit(0)
    if how == "segv":
        import ctypes

        ctypes.string_at(0)
