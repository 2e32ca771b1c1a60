"""Output of a worker that dies is not lost, and stdout/stderr keep their order (issue 16).

Each case runs in a child interpreter whose stdout and stderr are one pipe, so
the order in which the caller wrote the forwarded lines is what the pipe holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.systemd

TESTS = Path(__file__).resolve().parents[1]


def run(how: str, n: int) -> list[str]:
    code = f"""
    from truth_tasks import interleave_then_die
    from sandboxed import sandboxed, WorkerDiedError
    fn = sandboxed(CPUWeight=64)(interleave_then_die)
    try:
        fn({n}, {how!r})
    except WorkerDiedError:
        pass
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def expected(n: int) -> list[str]:
    return [line for i in range(n) for line in (f"out {i}", f"err {i}")]


@pytest.mark.parametrize("how", ["return", "exit", "segv"])
def test_output_keeps_the_order_it_was_written_in_across_stdout_and_stderr(
    systemd: Any, how: str
) -> None:
    assert run(how, 50) == expected(50)


@pytest.mark.parametrize("attempt", range(5))
def test_output_written_just_before_os_exit_is_never_lost(systemd: Any, attempt: int) -> None:
    assert run("exit", 3) == expected(3)


def test_fd_level_output_written_just_before_death_arrives(systemd: Any) -> None:
    lines = run("fd", 2)
    assert lines[:4] == expected(2)
    assert "fd-level last words" in lines
