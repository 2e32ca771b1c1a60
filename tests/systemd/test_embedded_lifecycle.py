"""The embedded manager's lifetime as other processes see it.

Stop while callers are attached, callers that must not bring back a manager
stopped on purpose, read-only commands that boot nothing, and a start that is
atomic even when its starter dies half-way. Each test boots its own manager
in a private state directory, next to the session's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxed import embedded
from sandboxed.systemd import embedded as _embedded

pytestmark = pytest.mark.skipif(
    os.path.isdir("/run/systemd/system") or os.geteuid() != 0,
    reason="the embedded manager is for hosts whose PID 1 is not systemd, as root",
)

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def state() -> Iterator[Path]:
    d = Path("/run/sandboxed/test-" + os.urandom(4).hex())
    yield d
    with contextlib.suppress(Exception):
        embedded.stop(d, force=True)
    shutil.rmtree(d, ignore_errors=True)


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SANDBOXED_MANAGER",)}
    env.update(SANDBOXED_EMBEDDED_DIR=str(state), PYTHONPATH=str(ROOT), **extra)
    return env


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandboxed", *args],
        capture_output=True,
        text=True,
        env=_env(state),
        cwd=str(ROOT),
        timeout=120,
    )


def _processes_of(state: Path) -> list[int]:
    """Live processes whose command line names ``state`` (keepers of its manager)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(state) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
    return found


def _cgroups_of(state: Path) -> list[Path]:
    name = _embedded._child_cgroup(state)
    return [p for p in Path("/sys/fs/cgroup").glob(f"**/{name}") if p.is_dir()]


# -- read-only commands --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (("ls",), 0, "no embedded manager is running"),
        (("ls", "--json"), 0, ""),
        (("gc", "--dry-run"), 0, "no embedded manager is running"),
        (("security", "sandboxed-0-1-a.service"), 1, "no embedded manager is running"),
        (("embedded", "status"), 3, "not running"),
    ],
    ids=["ls", "ls-json", "gc-dry-run", "security-unit", "embedded-status"],
)
def test_read_only_commands_say_there_is_no_manager_and_boot_none(
    state: Path, args: tuple[str, ...], status: int, says: str
) -> None:
    r = _cli(state, *args)
    assert r.returncode == status, r.stdout + r.stderr
    assert says in r.stdout + r.stderr
    assert not (state / "state.json").exists()
    assert not (state / "run").exists()
    assert _processes_of(state) == []
    assert _cgroups_of(state) == []


# -- stop while callers are attached -----------------------------------------------------------

CALLER = textwrap.dedent(
    """
    import sys, time
    import sandboxed
    from sandboxed import sandboxed as sandbox

    def ident(x):
        return x

    fn = sandbox(User="nobody")(ident)
    print(fn("ready"), flush=True)
    sys.stdin.readline()  # until the test says: call again
    try:
        print(fn("again"), flush=True)
    except sandboxed.SandboxError as e:
        print(type(e).__name__, str(e).splitlines()[0], flush=True)
    """
)


@pytest.fixture
def caller(state: Path) -> Iterator[subprocess.Popen[str]]:
    p = subprocess.Popen(
        [sys.executable, "-c", CALLER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(state),
        cwd=str(ROOT),
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    yield p
    with contextlib.suppress(Exception):
        p.kill()
    p.wait(30)


def _call_again(p: subprocess.Popen[str]) -> str:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def test_stop_refuses_while_another_process_has_sandboxes_and_names_it(
    state: Path, caller: subprocess.Popen[str]
) -> None:
    r = _cli(state, "embedded", "stop")
    assert r.returncode == 1
    assert f"pid {caller.pid}" in r.stderr and "--force" in r.stderr
    assert embedded.status(state) is not None
    assert _call_again(caller) == "again"


def test_stop_waits_for_callers_to_finish_when_asked(
    state: Path, caller: subprocess.Popen[str]
) -> None:
    stopper = subprocess.Popen(
        [sys.executable, "-m", "sandboxed", "embedded", "stop", "--wait", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(state),
        cwd=str(ROOT),
    )
    assert _call_again(caller) == "again"  # still served while the stop waits
    assert stopper.poll() is None
    caller.kill()
    caller.wait(30)
    out, err = stopper.communicate(timeout=90)
    assert stopper.returncode == 0, out + err
    assert "stopped" in out
    assert embedded.status(state) is None
    assert _processes_of(state) == []


def test_a_forced_stop_is_not_undone_by_the_callers_that_were_attached(
    state: Path, caller: subprocess.Popen[str]
) -> None:
    r = _cli(state, "embedded", "stop", "--force")
    assert r.returncode == 0, r.stderr
    reply = _call_again(caller)
    assert reply.startswith("ManagerNotFoundError"), reply
    assert "stopped on purpose" in reply
    assert embedded.status(state) is None
    assert _processes_of(state) == []
    assert _cgroups_of(state) == []


def test_a_new_process_may_start_a_manager_again_after_a_stop(state: Path) -> None:
    embedded.start(state)
    assert embedded.stop(state) is True
    r = subprocess.run(
        [sys.executable, "-c", CALLER],
        input="\n",
        capture_output=True,
        text=True,
        env=_env(state),
        cwd=str(ROOT),
        timeout=120,
    )
    assert r.stdout.split() == ["ready", "again"], r.stdout + r.stderr


def test_a_caller_restarts_a_manager_that_died_without_being_stopped(
    state: Path, caller: subprocess.Popen[str]
) -> None:
    m = embedded.status(state)
    assert m is not None
    os.kill(m.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _embedded._pid_alive(m.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _call_again(caller) == "again"
    again = embedded.status(state)
    assert again is not None and again.pid != m.pid


# -- an atomic start ---------------------------------------------------------------------------


def test_a_starter_killed_mid_start_leaves_no_manager_behind(state: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; from sandboxed import embedded; "
            f"embedded.start(Path({str(state)!r}))",
        ],
        env=_env(state),
        cwd="/",
    )
    deadline = time.monotonic() + 30
    while not (state / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert (state / "pid").exists()  # the keeper and its PID 1 exist now
    starter.kill()
    starter.wait(10)
    deadline = time.monotonic() + 15
    while (_processes_of(state) or _cgroups_of(state)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_of(state) == []
    assert _cgroups_of(state) == []
    assert embedded.status(state) is None
    m = embedded.start(state)  # and the directory is usable again
    assert embedded.status(state) == m


def test_stop_never_removes_the_files_of_a_live_manager_whose_state_is_missing(
    state: Path,
) -> None:
    m = embedded.start(state)
    (state / "state.json").unlink()
    assert embedded.stop(state) is True  # found through what the keeper wrote
    assert not _embedded._pid_alive(m.pid)
    assert not _embedded._pid_alive(m.keeper_pid)
    assert _cgroups_of(state) == []
