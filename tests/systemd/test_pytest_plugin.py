"""The pytest plugin: ``@pytest.mark.sandboxed(...)`` runs a test's body in a real sandbox.

One inner pytest session (a subprocess) runs a test file whose tests each
show one behaviour; the outer tests assert on its per-test outcomes and report.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.systemd

INNER = """
import os, socket, sys
import pytest
from sandboxed import NoNetwork, ReadOnly

PORT = {port}

@pytest.fixture
def settings():
    return {{"retries": 3, "name": "x"}}

@pytest.mark.sandboxed(NoNetwork)
def test_no_network_cannot_reach_the_hosts_loopback_server():
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", PORT), timeout=2)

def test_without_the_marker_the_server_is_reachable():
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()

@pytest.mark.sandboxed(User="nobody")
def test_runs_as_the_units_user():
    assert os.getuid() == 65534

@pytest.mark.sandboxed(NoNetwork)
def test_fixture_values_are_passed_in(settings, tmp_path):
    assert settings == {{"retries": 3, "name": "x"}}
    assert tmp_path.name.startswith("test_fixture_values")

@pytest.mark.sandboxed(ReadOnly)
def test_read_only_system_refuses_writes():
    with pytest.raises(OSError):
        open("/etc/sandboxed-plugin-probe", "w")

def helper():
    return 3

@pytest.mark.sandboxed(NoNetwork)
def test_failing_assert_is_rewritten():
    x = helper()
    assert x + 1 == 5, "arithmetic"

@pytest.mark.sandboxed()
def test_unpicklable_fixture_is_refused(capsys):
    pass

@pytest.mark.sandboxed()
def test_skip_inside_skips():
    pytest.skip("not on this machine")

@pytest.mark.sandboxed(CPUQuta=0.5)
def test_unknown_directive_errors():
    pass

class TestInAClass:
    @pytest.mark.sandboxed(NoNetwork)
    @pytest.mark.parametrize("n", [1, 2])
    def test_parametrized_method(self, n):
        assert n in (1, 2)
        assert os.getpid() != {outer_pid}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except TimeoutError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


@pytest.fixture(scope="module")
def inner(
    systemd: object, server: int, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, str]]:
    d = tmp_path_factory.mktemp("plugin")
    d.chmod(0o755)  # its parents stay 0700: sandboxed binds it in for nobody
    f = d / "test_inner.py"
    f.write_text(textwrap.dedent(INNER.format(port=server, outer_pid=os.getpid())))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(f)],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=180,
    )
    outcomes = {}
    for m in re.finditer(r"^(PASSED|FAILED|SKIPPED|ERROR) test_inner\.py::(\S+)", r.stdout, re.M):
        outcomes[m.group(2)] = m.group(1)
    return r.stdout, outcomes


@pytest.mark.parametrize(
    ("test", "outcome"),
    [
        ("test_no_network_cannot_reach_the_hosts_loopback_server", "PASSED"),
        ("test_without_the_marker_the_server_is_reachable", "PASSED"),
        ("test_runs_as_the_units_user", "PASSED"),
        ("test_fixture_values_are_passed_in", "PASSED"),
        ("test_read_only_system_refuses_writes", "PASSED"),
        ("TestInAClass::test_parametrized_method[1]", "PASSED"),
        ("TestInAClass::test_parametrized_method[2]", "PASSED"),
        ("test_failing_assert_is_rewritten", "FAILED"),
        ("test_unpicklable_fixture_is_refused", "FAILED"),
        ("test_unknown_directive_errors", "FAILED"),
    ],
)
def test_marked_test_has_the_expected_outcome(
    inner: tuple[str, dict[str, str]], test: str, outcome: str
) -> None:
    out, outcomes = inner
    assert outcomes.get(test) == outcome, out


def test_skip_inside_the_sandbox_is_a_skip(inner: tuple[str, dict[str, str]]) -> None:
    out, _ = inner
    assert re.search(r"SKIPPED \[1\] test_inner\.py:\d+: not on this machine", out), out


def test_failure_report_shows_the_rewritten_assert_and_the_sandbox(
    inner: tuple[str, dict[str, str]],
) -> None:
    out, _ = inner
    section = out.split("test_failing_assert_is_rewritten ___", 1)[1].split("\n___", 1)[0]
    assert "inside sandboxed-" in section
    assert 'assert x + 1 == 5, "arithmetic"' in section  # the source line
    assert "E   AssertionError: arithmetic" in section
    assert "E   assert (3 + 1) == 5" in section  # pytest's rewriting, done in the sandbox
    assert "sandboxed/runtime/" not in section  # no sandboxed internals
    assert "sandboxed/api/" not in section
    assert "FAILED test_inner.py::test_failing_assert_is_rewritten - AssertionError" in out


def test_unpicklable_fixture_failure_names_the_fixture(inner: tuple[str, dict[str, str]]) -> None:
    out, _ = inner
    assert "@pytest.mark.sandboxed: fixture 'capsys' (CaptureFixture) cannot be passed" in out


def test_bad_marker_options_fail_with_the_directive_error(
    inner: tuple[str, dict[str, str]],
) -> None:
    out, _ = inner
    assert "@pytest.mark.sandboxed: unknown directive 'CPUQuta'; did you mean CPUQuota" in out
    assert "directives/options.py" not in out  # one clear line, not a traceback into sandboxed


def test_marker_is_registered(systemd: object, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--markers"], capture_output=True, text=True, cwd=tmp_path
    )
    assert "@pytest.mark.sandboxed(*presets, **directives)" in r.stdout
