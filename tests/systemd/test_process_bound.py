"""Values bound to the caller's process are refused, never silently re-made (issue 16).

An open file passed to a sandboxed call (as an argument, or as a ``__main__``
global its function uses) was re-opened by name in the worker, truncating the
caller's file; a result holding a file of the sandbox's private ``/tmp`` did the
same to the host's file of that name. Against a real systemd.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from truth_tasks import open_in_sandbox, write_to

from sandboxed import SerializationError, sandboxed

pytestmark = pytest.mark.systemd

TESTS = Path(__file__).resolve().parents[1]


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_open_file_argument_is_refused_and_the_callers_file_is_untouched(
    systemd: Any, tmp_path: Path
) -> None:
    path = tmp_path / "keep"
    path.write_text("precious")
    fn = sandboxed(CPUWeight=62)(write_to)
    with open(path, "a") as f, pytest.raises(SerializationError) as info:
        fn(f)
    assert info.value.which == "argument 0"
    assert path.read_text() == "precious"


def test_a_main_global_holding_an_open_file_is_refused(systemd: Any, tmp_path: Path) -> None:
    path = tmp_path / "keep"
    path.write_text("precious")
    proc = run_script(
        f"""
        from sandboxed import sandboxed, SerializationError
        log = open({str(path)!r}, "r+")
        @sandboxed(CPUWeight=63)
        def use():
            return log.read()
        try:
            use()
        except SerializationError as e:
            print("refused:", e)
        """
    )
    assert "refused:" in proc.stdout, proc.stderr
    assert "'log'" in proc.stdout
    assert path.read_text() == "precious"


def test_a_result_holding_a_sandbox_file_is_refused_and_the_hosts_file_is_untouched(
    systemd: Any,
) -> None:
    host = Path("/tmp/sbx16-result")
    host.write_text("host data")
    try:
        with pytest.raises(SerializationError) as info:
            sandboxed(PrivateTmp=True)(open_in_sandbox)()
        assert info.value.which == "result"
        assert host.read_text() == "host data"
    finally:
        host.unlink()
