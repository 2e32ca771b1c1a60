"""The ``sandboxed`` command line, run as a subprocess against a real systemd."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sandboxed import sandboxed

pytestmark = pytest.mark.systemd


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandboxed", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr, r.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # its parents stay 0700: sandboxed binds it in for nobody
    (tmp_path / "tool.py").write_text(
        textwrap.dedent(
            """
            import os, socket, sys

            def whoami(*args):
                print("uid", os.getuid(), "args", list(args))

            def answer():
                return 42

            def leave(code):
                sys.exit(int(code))

            def broken():
                assert 1 + 1 == 3, "arithmetic is broken"

            def connect():
                try:
                    socket.create_connection(("127.0.0.1", 9), timeout=1)
                except OSError as e:
                    print("blocked", type(e).__name__)
            """
        )
    )
    (tmp_path / "script.py").write_text(
        textwrap.dedent(
            """
            import sys
            print("script argv", sys.argv[1:], "name", __name__)
            sys.exit(5)
            """
        )
    )
    return tmp_path


# -- run -----------------------------------------------------------------------------------


def test_run_callable_prints_its_output_as_the_units_user(systemd: object, project: Path) -> None:
    r = cli("run", "-p", "User=nobody", "tool:whoami", "a", "2", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "uid 65534 args ['a', '2']" in r.stdout


def test_run_prints_a_return_value_that_is_not_none(systemd: object, project: Path) -> None:
    r = cli("run", "tool:answer", cwd=project)
    assert (r.returncode, r.stdout.strip()) == (0, "42")


def test_run_exits_with_the_status_of_sys_exit(systemd: object, project: Path) -> None:
    assert cli("run", "tool:leave", "7", cwd=project).returncode == 7


def test_run_user_exception_prints_its_traceback_and_exits_1(
    systemd: object, project: Path
) -> None:
    r = cli("run", "tool:broken", cwd=project)
    assert r.returncode == 1
    assert "AssertionError: arithmetic is broken" in r.stderr
    assert "sandboxed/cli/run.py" not in r.stderr  # only the user's frames


def test_run_script_runs_as_main_with_its_arguments(systemd: object, project: Path) -> None:
    r = cli("run", "--preset", "Hardened", str(project / "script.py"), "x", "-y")
    assert r.returncode == 5, r.stderr
    assert "script argv ['x', '-y'] name __main__" in r.stdout


def test_run_with_no_network_preset_cannot_connect(systemd: object, project: Path) -> None:
    r = cli("run", "--preset", "NoNetwork", "tool:connect", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "blocked" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "CPUQuta=20%", "tool:answer"], "did you mean CPUQuota"),
        (["-p", "CPUQuota=lots", "tool:answer"], "CPUQuota"),
        (["--preset", "Bogus", "tool:answer"], "unknown preset 'Bogus'"),
        (["not a target"], "invalid target"),
        (["missing.py"], "no such script"),
    ],
    ids=["unknown-directive", "bad-value", "unknown-preset", "bad-target", "missing-script"],
)
def test_run_configuration_errors_are_one_line_and_exit_nonzero(
    systemd: object, project: Path, args: list[str], message: str
) -> None:
    r = cli("run", *args, cwd=project)
    assert r.returncode != 0
    no_traceback(r)
    assert r.stderr.startswith("sandboxed run: error:"), r.stderr
    assert message in r.stderr.splitlines()[0]


def test_run_of_code_the_units_user_cannot_read_fails_before_the_call(
    systemd: object, project: Path
) -> None:
    project.chmod(0o700)
    r = cli("run", "-p", "User=nobody", "tool:answer", cwd=project)
    assert r.returncode == 1
    no_traceback(r)
    assert f"the sandbox cannot reach {project}" in r.stderr
    assert "chmod o+rX" in r.stderr


def test_run_of_a_module_the_sandbox_cannot_import_says_so(systemd: object, project: Path) -> None:
    r = cli("run", "no_such_module:f", cwd=project)
    assert r.returncode == 2
    assert "cannot import 'no_such_module' in the sandbox" in r.stderr
    no_traceback(r)


def test_run_of_a_function_the_module_lacks_is_an_error_like_an_import_failure(
    systemd: object, project: Path
) -> None:
    r = cli("run", "tool:nosuchfunc", cwd=project)
    assert r.returncode == 2
    assert r.stderr.startswith("sandboxed run: error: 'tool:nosuchfunc': module 'tool' has no")
    no_traceback(r)
    assert "AttributeError" not in r.stderr


def test_run_of_something_not_callable_is_an_error(systemd: object, project: Path) -> None:
    (project / "consts.py").write_text("LIMIT = 3\n")
    r = cli("run", "consts:LIMIT", cwd=project)
    assert r.returncode == 2
    assert "sandboxed run: error: 'consts:LIMIT' is a int, not a function to call" in r.stderr
    no_traceback(r)


# -- ls, stop, gc ---------------------------------------------------------------------------


@sandboxed(CPUQuota=0.5)
def _hold() -> bytes:
    global _ballast
    _ballast = bytearray(20 * 2**20)
    _ballast[::4096] = b"x" * len(_ballast[::4096])
    return b"ok"


def test_ls_lists_a_live_unit_with_its_caller_cpu_and_memory(systemd: object) -> None:
    assert _hold() == b"ok"
    name = _hold.sandbox.unit_name
    r = cli("ls", "--json")
    assert r.returncode == 0, r.stderr
    rows = {u["unit"]: u for u in map(json.loads, r.stdout.splitlines())}
    assert name in rows
    row = rows[name]
    assert row["caller_pid"] == os.getpid() and row["caller_alive"] is True
    assert row["active"] == "active"
    assert row["cpu_nsec"] is None or row["cpu_nsec"] > 0
    assert row["memory_bytes"] is None or row["memory_bytes"] > 20 * 2**20
    table = cli("ls")
    assert name in table.stdout and table.stdout.startswith("UNIT")


def test_stop_stops_a_named_unit_and_the_function_recovers(systemd: object, client) -> None:
    assert _hold() == b"ok"
    name = _hold.sandbox.unit_name
    r = cli("stop", name.removesuffix(".service"))
    assert r.returncode == 0, r.stderr
    assert f"stopped {name}" in r.stdout
    assert name not in [u[0] for u in client.list_units(["sandboxed-*"])]
    assert _hold() == b"ok"  # a fresh unit


def test_stop_refuses_units_that_are_not_sandboxes(systemd: object) -> None:
    r = cli("stop", "dbus.service")
    assert r.returncode != 0
    assert "not a sandbox unit" in r.stderr
    no_traceback(r)


def test_stop_of_an_unknown_unit_fails(systemd: object) -> None:
    r = cli("stop", "sandboxed-nothere-1-abc.service")
    assert r.returncode == 1
    assert "no such sandbox unit" in r.stderr


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _sleeper(client, pid: int) -> str:
    name = f"sandboxed-gctest-{pid}-{secrets.token_hex(3)}.service"
    client.start_transient_unit(
        name,
        [
            ("ExecStart", "a(sasb)", [("/bin/sleep", ["/bin/sleep", "300"], False)]),
            ("CollectMode", "s", "inactive-or-failed"),
        ],
    )
    return name


def test_gc_stops_units_whose_caller_is_gone_and_keeps_the_others(systemd: object, client) -> None:
    orphan = _sleeper(client, _dead_pid())
    mine = _sleeper(client, os.getpid())
    try:
        dry = cli("gc", "--dry-run")
        assert f"would stop {orphan}" in dry.stdout
        r = cli("gc")
        assert r.returncode == 0, r.stderr
        assert f"stopping {orphan} (caller pid" in r.stdout
        assert mine not in r.stdout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = [u[0] for u in client.list_units(["sandboxed-gctest-*"])]
            if orphan not in left:
                break
            time.sleep(0.1)
        assert orphan not in left and mine in left
    finally:
        client.stop_unit(mine)
        client.stop_unit(orphan)


# -- doctor ---------------------------------------------------------------------------------


def test_doctor_reports_user_manager_layout_reach_and_directives(systemd: object) -> None:
    r = cli("doctor")
    no_traceback(r)
    out = r.stdout
    assert "running as root" in out
    assert "manager: systemd 2" in out
    assert "cgroup layout:" in out
    assert "reachable by nobody" in out or "readable by nobody" in out
    assert "NoNewPrivileges=yes enforced" in out
    assert "MemoryMax=32M enforced" in out
    # every problem comes with a remedy on the next line
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("warn", "FAIL")):
            assert lines[i + 1].strip().startswith("remedy:"), line
    assert r.returncode == (1 if any(ln.startswith("FAIL") for ln in lines) else 0)


def test_doctor_names_an_unreachable_manager_with_a_remedy(systemd: object) -> None:
    r = cli("doctor", env={"SANDBOXED_MANAGER": "/nonexistent/socket"})
    no_traceback(r)
    assert r.returncode == 1
    assert "FAIL  no service manager reachable" in r.stdout
    assert "remedy:" in r.stdout


def test_doctor_reports_a_user_that_does_not_exist(systemd: object) -> None:
    r = cli("doctor", "--quick", "--user", "nosuchuser")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  user 'nosuchuser' does not exist on this machine" in r.stdout
    assert "readable by nosuchuser" not in r.stdout and "reachable by nosuchuser" not in r.stdout
    no_traceback(r)


# The CLI run by an unprivileged user: everything it needs is imported first (as
# root: this checkout may not be readable by nobody), then the process drops to nobody.
AS_NOBODY = """
import os, sys
import sandboxed.cli.main as m
import sandboxed.cli.embedded, sandboxed.systemd.embedded, sandboxed.systemd.bus
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(m.main(sys.argv[1:]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="drops from root to nobody")
@pytest.mark.skipif(
    os.path.isdir("/run/systemd/system"),
    reason="PID 1 is systemd here: there is no embedded manager to refuse stopping",
)
def test_embedded_stop_as_non_root_prints_an_error_and_no_traceback(systemd: object) -> None:
    r = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, "embedded", "stop"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0, r.stdout + r.stderr
    assert r.stderr.startswith("sandboxed embedded: error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr
    no_traceback(r)


def test_an_unexpected_error_is_one_line_naming_it_a_bug(systemd: object) -> None:
    from sandboxed.cli import main as cli_main

    def broken(ns: object) -> int:
        raise RuntimeError("wires crossed")

    saved = cli_main.COMMANDS["ls"]
    cli_main.COMMANDS["ls"] = saved._replace(run=broken)
    try:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli_main.main(["ls"])
    finally:
        cli_main.COMMANDS["ls"] = saved
    assert code == 1
    assert err.getvalue().startswith("sandboxed ls: error: unexpected RuntimeError: wires crossed")
    assert "Traceback" not in err.getvalue()


def test_cli_without_a_command_shows_usage(systemd: object) -> None:
    r = cli()
    assert r.returncode == 2 and "usage: sandboxed" in r.stderr
