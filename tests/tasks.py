"""Tasks for the executor tests.

They live in a module of their own, with light imports, so that they travel
by reference and a freshly forked worker loads them in a few milliseconds
(a test module would drag pytest into every worker).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def pair(x: int, y: int) -> tuple[int, int, int]:
    return x, y, os.getpid()


def nap(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def span(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def fail(message: str) -> None:
    raise KeyError(message)


def write_tmp(name: str, text: str) -> str:
    with open(f"/tmp/{name}", "w") as f:
        f.write(text)
    return os.path.realpath(f"/tmp/{name}")


def read_tmp(name: str) -> str | None:
    try:
        with open(f"/tmp/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return None


def die_by_sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


def die_by_exit() -> None:
    os._exit(3)


def die_by_segfault() -> None:
    ctypes.string_at(0)
