"""By-value functions (``__main__``, notebooks, lambdas) are shipped once per worker.

Each test runs a script as ``__main__`` in a fresh interpreter (the only way to get
functions whose ``__module__`` is ``__main__``) against the real systemd the suite uses.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.systemd

PRELUDE = """
import os, sys
import sandboxed
from sandboxed import sandboxed as box

def shipped():
    # How many by-value functions the caller sent in full (not by digest) so far.
    from sandboxed.runtime import call
    return call.FUNCTIONS_SHIPPED
"""


def run_script(tmp_path: Path, code: str) -> list[str]:
    script = tmp_path / f"script_{uuid.uuid4().hex[:8]}.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr + out.stdout
    return [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("OUT ")]


def test_a_main_function_is_shipped_once_and_its_globals_live_in_the_worker(
    systemd: Any, tmp_path: Path
) -> None:
    out = run_script(
        tmp_path,
        """
        CACHE = {}

        @box(Environment="SBX_CASE=byvalue-once", workers=1)
        def remember(key):
            CACHE[key] = CACHE.get(key, 0) + 1
            return CACHE[key], os.getpid()

        first, pid1 = remember("a")
        second, pid2 = remember("a")
        third, _ = remember("b")
        assert pid1 == pid2 != os.getpid()
        print("OUT", first, second, third, shipped(), CACHE)
        """,
    )
    # The global dict lives in the worker (as with ProcessPoolExecutor): the second call
    # sees what the first stored; the caller's own CACHE is untouched; one shipment.
    assert out == ["1 2 1 1 {}"]


def test_a_rebound_global_and_new_code_are_noticed_and_shipped_again(
    systemd: Any, tmp_path: Path
) -> None:
    out = run_script(
        tmp_path,
        """
        FACTOR = 2

        def helper(x):
            return x * FACTOR

        def compute(x):
            return helper(x) + 1

        run = box(Environment="SBX_CASE=byvalue-change", workers=1)(compute)
        a = run(10)
        b = run(10)
        n_same = shipped()
        FACTOR = 3                       # a global the helper reads, rebound
        c = run(10)
        def helper(x):                   # the helper redefined (new code)
            return -x
        d = run(10)
        compute.__code__ = (lambda x: x * 100).__code__   # the function's own code
        e = run(10)
        print("OUT", a, b, c, d, e, n_same, shipped())
        """,
    )
    assert out == ["21 21 31 -9 1000 1 4"]


def test_two_functions_with_the_same_code_but_other_globals_are_not_confused(
    systemd: Any, tmp_path: Path
) -> None:
    out = run_script(
        tmp_path,
        """
        def make(value):
            def get():
                return value
            return get

        opts = dict(Environment="SBX_CASE=byvalue-same-code", workers=1)
        one, two = box(**opts)(make(1)), box(**opts)(make(2))
        print("OUT", one(), two(), one(), two(), (lambda: 3)(), box(**opts)(lambda: 4)())
        """,
    )
    assert out == ["1 2 1 2 3 4"]


def test_a_worker_that_loses_or_denies_its_cached_function_gets_it_again(
    systemd: Any, tmp_path: Path
) -> None:
    # A hostile worker may lie about its cache: it only ever makes the caller send the
    # function again (what the caller runs is always what the caller pickled).
    out = run_script(
        tmp_path,
        """
        @box(Environment="SBX_CASE=byvalue-forget", workers=1)
        def forget(wipe):
            if wipe:
                from sandboxed.worker import serve
                serve.FUNCTIONS.clear()
            return os.getpid()

        pid1 = forget(True)
        before = shipped()
        pid2 = forget(False)
        print("OUT", pid1 == pid2, shipped() - before)
        """,
    )
    assert out == ["True 1"]


def test_a_replaced_worker_gets_the_function_again(systemd: Any, tmp_path: Path) -> None:
    out = run_script(
        tmp_path,
        """
        import signal

        @box(Environment="SBX_CASE=byvalue-replaced", workers=1)
        def pid_then_die(die):
            if die:
                os.kill(os.getpid(), signal.SIGKILL)
            return os.getpid()

        pid1 = pid_then_die(False)
        try:
            pid_then_die(True)
        except sandboxed.WorkerDiedError:
            pass
        pid2 = pid_then_die(False)
        print("OUT", pid1 != pid2, shipped())
        """,
    )
    assert out == ["True 2"]


def test_a_main_function_loads_in_the_worker_without_dill(systemd: Any, tmp_path: Path) -> None:
    out = run_script(
        tmp_path,
        """
        import math

        def area(r):
            return round(math.pi * r * r, 3)

        @box(Environment="SBX_CASE=byvalue-nodill", workers=1)
        def probe(r):
            return area(r), "dill" in sys.modules

        print("OUT", probe(1.0), "dill" in sys.modules)
        """,
    )
    assert out == ["(3.142, False) False"]


def test_a_main_class_still_travels_with_dill(systemd: Any, tmp_path: Path) -> None:
    out = run_script(
        tmp_path,
        """
        class Point:
            def __init__(self, x):
                self.x = x

        @box(Environment="SBX_CASE=byvalue-class", workers=1)
        def double(p):
            return Point(p.x * 2)

        print("OUT", double(Point(21)).x, double(Point(2)).x)
        """,
    )
    assert out == ["42 4"]
