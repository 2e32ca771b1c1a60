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
def test_unpicklable_fixture_is_refused(request):
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

# Each test shows one behaviour of the plugin against the real sandbox; the outer
# tests below name the behaviour and assert the inner outcome.
INNER_BEHAVIOUR = """
import asyncio, json, os, pathlib, sys
import pytest
from sandboxed import Hardened, NoNetwork, PrivateTmp, ReadOnly

STATE = []
CWD = {cwd!r}

# -- isolation: the a/b/c tests run in this order
@pytest.mark.sandboxed(NoNetwork)
def test_iso_a_monkeypatch_works_inside(monkeypatch):
    monkeypatch.setenv("LEAKY", "1")
    monkeypatch.setattr(json, "dumps", lambda *a, **k: "patched")
    monkeypatch.chdir("/usr")
    os.environ["RAW"] = "1"
    sys.modules["json"].loads = None
    STATE.append(1)
    assert os.environ["LEAKY"] == "1"
    assert json.dumps({{}}) == "patched"
    assert os.getcwd() == "/usr"

@pytest.mark.sandboxed(NoNetwork)
def test_iso_b_next_test_starts_from_the_same_state():
    assert "LEAKY" not in os.environ and "RAW" not in os.environ
    assert json.dumps({{}}) == "{{}}" and json.loads("1") == 1
    assert os.getcwd() == CWD
    assert STATE == []

def test_iso_c_pytests_process_was_not_touched():
    assert "LEAKY" not in os.environ and "RAW" not in os.environ
    assert json.dumps({{}}) == "{{}}"

@pytest.mark.sandboxed(NoNetwork)
def test_capsys_works_inside(capsys):
    print("from the sandbox")
    assert capsys.readouterr().out == "from the sandbox\\n"

@pytest.mark.sandboxed(NoNetwork)
def test_caplog_works_inside(caplog):
    import logging
    caplog.set_level(logging.INFO)
    logging.getLogger("inner").info("logged in the sandbox %d", 7)
    assert caplog.messages == ["logged in the sandbox 7"]
    assert caplog.records[0].process == os.getpid()

# -- temporary directories under every preset
PRESETS = {{
    "none": ((), {{}}),
    "NoNetwork": ((NoNetwork,), {{}}),
    "ReadOnly": ((ReadOnly,), {{}}),
    "PrivateTmp": ((PrivateTmp,), {{}}),
    "nobody": ((), {{"User": "nobody"}}),
    "NoNetwork-ReadOnly-nobody": ((NoNetwork, ReadOnly), {{"User": "nobody"}}),
    "Hardened": ((Hardened,), {{}}),
}}

@pytest.fixture
def written(tmp_path, tmp_path_factory):
    yield tmp_path
    # In pytest's process, after the sandboxed body: what it wrote is here.
    assert (tmp_path / "out.txt").read_text() == "from the sandbox"
    assert (tmp_path / "sub" / "legacy.txt").read_text() == "tmpdir"
    made = sorted(p for p in tmp_path_factory.getbasetemp().iterdir()
                  if p.name.startswith("made-" + tmp_path.name[:20]))
    assert made and (made[-1] / "x").read_text() == "factory"
    # Nothing written beside the session's directory reached the host.
    assert not list(tmp_path_factory.getbasetemp().parent.glob("escape-*"))

@pytest.mark.parametrize(
    "preset",
    [pytest.param(k, marks=pytest.mark.sandboxed(*a, **kw), id=k)
     for k, (a, kw) in PRESETS.items()],
)
def test_tmp_dirs_are_writable(preset, written, tmp_path, tmpdir, tmp_path_factory):
    assert written == tmp_path
    (tmp_path / "out.txt").write_text("from the sandbox")
    tmpdir.mkdir("sub").join("legacy.txt").write("tmpdir")
    (tmp_path_factory.mktemp("made-" + tmp_path.name[:20]) / "x").write_text("factory")
    base = tmp_path_factory.getbasetemp()
    top = base.parent if base.parent.name.startswith("pytest-of-") else base.parent.parent
    # What else lies in pytest's per-user directory on the host stays out of sight.
    assert not (top / os.environ["DECOY"]).exists()
    try:
        (top / ("escape-" + preset)).write_text("x")
    except OSError:
        pass

# -- environment
@pytest.fixture
def set_in_pytest(monkeypatch):
    monkeypatch.setenv("FROM_FIXTURE", "yes")

@pytest.mark.sandboxed(NoNetwork)
def test_env_is_the_test_process_environment(set_in_pytest):
    assert os.environ.get("DX_OUTER") == "1"
    assert os.environ.get("FROM_FIXTURE") == "yes"
    assert os.environ.get("API_TOKEN") == "s3cret"

@pytest.mark.sandboxed(User="nobody")
def test_env_names_the_units_user():
    assert os.environ.get("DX_OUTER") == "1"
    assert os.environ.get("USER") == "nobody"

@pytest.mark.sandboxed(NoNetwork, test_env="minimal")
def test_env_minimal_strips_everything_but_the_basics():
    assert "DX_OUTER" not in os.environ and "API_TOKEN" not in os.environ
    assert "PATH" in os.environ

@pytest.mark.sandboxed(NoNetwork, test_env=["DX_OUTER"])
def test_env_list_passes_only_those_names():
    assert os.environ.get("DX_OUTER") == "1" and "API_TOKEN" not in os.environ

@pytest.mark.sandboxed(NoNetwork, test_env="everything")
def test_env_bad_value_is_refused():
    pass

# -- async tests
@pytest.mark.asyncio
@pytest.mark.sandboxed(NoNetwork)
async def test_async_with_pytest_asyncio():
    await asyncio.sleep(0)
    assert os.getpid() != {outer_pid}

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
@pytest.mark.sandboxed(NoNetwork)
async def test_async_with_anyio(anyio_backend):
    import anyio
    await anyio.sleep(0)
    assert os.getpid() != {outer_pid}

@pytest.mark.asyncio
@pytest.mark.sandboxed(NoNetwork)
async def test_async_failure_is_reported():
    await asyncio.sleep(0)
    assert 2 * 2 == 5

# -- failures read like pytest's
@pytest.mark.sandboxed(NoNetwork)
def test_fail_explicit():
    pytest.fail("explicit failure")

@pytest.mark.sandboxed(NoNetwork)
def test_fail_chained():
    try:
        {{}}["k"]
    except KeyError as e:
        raise ValueError("while handling") from e

@pytest.mark.sandboxed(NoNetwork)
@pytest.mark.xfail(raises=KeyError, strict=True)
def test_xfail_by_exception_type():
    {{}}["k"]
"""

XDIST = """
import pytest
from sandboxed import NoNetwork

@pytest.mark.sandboxed(NoNetwork)
def test_fails_under_xdist():
    assert 3 + 1 == 5, "arithmetic"

@pytest.mark.sandboxed(NoNetwork)
def test_passes_under_xdist():
    pass
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


def run_inner(
    d: Path, name: str, source: str, *args: str, env: dict[str, str] | None = None
) -> tuple[str, dict[str, list[str]]]:
    """Run pytest on ``source`` (as ``d/name``) in a subprocess: its output, outcomes by test."""
    f = d / name
    f.write_text(textwrap.dedent(source))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", *args, str(f)],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    outcomes: dict[str, list[str]] = {}
    stem = re.escape(name)
    for m in re.finditer(
        rf"^(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) {stem}::(\S+)", r.stdout, re.M
    ):
        outcomes.setdefault(m.group(2), []).append(m.group(1))
    return r.stdout + r.stderr, outcomes


@pytest.fixture(scope="module")
def behaviour(systemd: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    d = tmp_path_factory.mktemp("behaviour")
    d.chmod(0o755)
    source = INNER_BEHAVIOUR.format(cwd=str(d), outer_pid=os.getpid())
    # Beside the inner session's directory, on the host: sandboxed tests must not see it.
    decoy = tmp_path_factory.getbasetemp().parent / f"decoy-{os.getpid()}"
    decoy.mkdir(exist_ok=True)
    env = {"DX_OUTER": "1", "API_TOKEN": "s3cret", "DECOY": decoy.name}
    try:
        return run_inner(d, "test_behaviour.py", source, env=env)
    finally:
        decoy.rmdir()


def section(out: str, test: str) -> str:
    """The failure report of ``test`` in pytest's output."""
    return out.split(f" {test} ___", 1)[1].split("\n___", 1)[0].split("\n===", 1)[0]


@pytest.mark.parametrize(
    ("test", "outcome"),
    [
        ("test_iso_a_monkeypatch_works_inside", "PASSED"),
        ("test_iso_b_next_test_starts_from_the_same_state", "PASSED"),
        ("test_iso_c_pytests_process_was_not_touched", "PASSED"),
        ("test_capsys_works_inside", "PASSED"),
        ("test_caplog_works_inside", "PASSED"),
        *[
            (f"test_tmp_dirs_are_writable[{p}]", "PASSED")
            for p in (
                "none",
                "NoNetwork",
                "ReadOnly",
                "PrivateTmp",
                "nobody",
                "NoNetwork-ReadOnly-nobody",
                "Hardened",
            )
        ],
        ("test_env_is_the_test_process_environment", "PASSED"),
        ("test_env_names_the_units_user", "PASSED"),
        ("test_env_minimal_strips_everything_but_the_basics", "PASSED"),
        ("test_env_list_passes_only_those_names", "PASSED"),
        ("test_env_bad_value_is_refused", "FAILED"),
        ("test_async_with_pytest_asyncio", "PASSED"),
        ("test_async_with_anyio", "PASSED"),
        ("test_async_failure_is_reported", "FAILED"),
        ("test_fail_explicit", "FAILED"),
        ("test_fail_chained", "FAILED"),
        ("test_xfail_by_exception_type", "XFAIL"),
    ],
)
def test_plugin_behaviour_has_the_expected_outcome(
    behaviour: tuple[str, dict[str, list[str]]], test: str, outcome: str
) -> None:
    out, outcomes = behaviour
    # A teardown error (a fixture's check in pytest's process) shows as a second line.
    assert outcomes.get(test) == [outcome], out


def test_async_failure_reads_like_pytests(behaviour: tuple[str, dict[str, list[str]]]) -> None:
    out, _ = behaviour
    text = section(out, "test_async_failure_is_reported")
    assert "assert 2 * 2 == 5" in text
    assert re.search(r"^E\s+assert \(2 \* 2\) == 5", text, re.M), text


def test_explicit_fail_shows_the_message_and_no_pytest_internals(
    behaviour: tuple[str, dict[str, list[str]]],
) -> None:
    out, _ = behaviour
    text = section(out, "test_fail_explicit")
    assert re.search(r"^E\s+Failed: explicit failure$", text, re.M), text
    assert "outcomes.py" not in text and "pytest_plugin.py" not in text
    assert "FAILED test_behaviour.py::test_fail_explicit - Failed: explicit failure" in out


def test_chained_failure_shows_each_exception_once(
    behaviour: tuple[str, dict[str, list[str]]],
) -> None:
    out, _ = behaviour
    text = section(out, "test_fail_chained")
    assert len(re.findall(r"^E\s+KeyError: 'k'$", text, re.M)) == 1, text
    assert len(re.findall(r"^E\s+ValueError: while handling$", text, re.M)) == 1, text
    assert text.count("The above exception was the direct cause") == 1, text
    assert "During handling of the above exception" not in text, text
    assert "RemoteTraceback" not in text and "pytest_plugin.py" not in text, text
    assert "FAILED test_behaviour.py::test_fail_chained - ValueError: while handling" in out


def test_bad_test_env_names_what_is_accepted(behaviour: tuple[str, dict[str, list[str]]]) -> None:
    out, _ = behaviour
    assert "@pytest.mark.sandboxed: invalid test_env 'everything'; accepted: 'inherit'" in out


def test_sandboxed_env_option_makes_minimal_the_default(systemd: object, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    source = """
    import os, pytest

    @pytest.mark.sandboxed()
    def test_minimal_by_default():
        assert "DX_OUTER" not in os.environ and "PATH" in os.environ

    @pytest.mark.sandboxed(test_env="inherit")
    def test_marker_still_wins():
        assert os.environ["DX_OUTER"] == "1"
    """
    out, outcomes = run_inner(
        tmp_path, "test_env_option.py", source, "--sandboxed-env=minimal", env={"DX_OUTER": "1"}
    )
    assert outcomes == {
        "test_minimal_by_default": ["PASSED"],
        "test_marker_still_wins": ["PASSED"],
    }, out


def test_under_xdist_the_short_summary_shows_the_exception(systemd: object, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    tmp_path.chmod(0o755)
    out, outcomes = run_inner(tmp_path, "test_xdist.py", XDIST, "-n", "2")
    assert outcomes == {
        "test_fails_under_xdist": ["FAILED"],
        "test_passes_under_xdist": ["PASSED"],
    }, out
    assert "FAILED test_xdist.py::test_fails_under_xdist - AssertionError: arithmetic" in out
    assert "Traceback (most recent call las" not in out
    assert re.search(r"^E\s+assert \(3 \+ 1\) == 5", out, re.M), out


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
    assert re.search(r"^E\s+AssertionError: arithmetic$", section, re.M)
    assert re.search(r"^E\s+assert \(3 \+ 1\) == 5$", section, re.M)  # rewritten in the sandbox
    assert "sandboxed/runtime/" not in section  # no sandboxed internals
    assert "sandboxed/api/" not in section
    assert "FAILED test_inner.py::test_failing_assert_is_rewritten - AssertionError" in out


def test_unpicklable_fixture_failure_names_the_fixture(inner: tuple[str, dict[str, str]]) -> None:
    out, _ = inner
    assert "@pytest.mark.sandboxed: fixture 'request' (TopRequest) cannot be passed" in out


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
