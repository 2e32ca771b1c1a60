"""The embedded manager: boots, is reused, is replaced when stale, stops cleanly.

It also leaves the host alone.

These tests boot their own embedded managers in private state directories, next
to (not instead of) the session's manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxed._errors import EmbeddedManagerError
from sandboxed.systemd import embedded
from sandboxed.systemd.bus import ManagerClient

pytestmark = pytest.mark.skipif(
    os.path.isdir("/run/systemd/system") or os.geteuid() != 0,
    reason="the embedded manager is for hosts whose PID 1 is not systemd, as root",
)

SYSCTLS = ("kernel/pid_max", "fs/file-max", "fs/nr_open", "kernel/printk", "kernel/core_pattern")


@pytest.fixture
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Not under /tmp: a private /run-like directory of our own.
    d = Path("/run/sandboxed/test-" + os.urandom(4).hex())
    yield d
    embedded.stop(d)
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def _procs_of(m: embedded.EmbeddedManager) -> list[int]:
    pids = []
    for d in m.cgroup_dirs:
        for sub, _dirs, files in os.walk(d):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in Path(sub, "cgroup.procs").read_text().split()]
    return pids


def test_boot_serves_dbus_and_stop_leaves_no_process_or_cgroup(state: Path) -> None:
    m = embedded.start(state)
    c = ManagerClient(m.address)
    assert c.version.startswith(("25", "26", "27"))
    assert c.get_property(
        "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "SystemState"
    ) in (
        "running",
        "degraded",
    )
    c.close()
    pids = [m.pid, m.keeper_pid, *_procs_of(m)]
    assert len(pids) >= 3  # keeper, systemd, dbus-daemon at least
    assert embedded.stop(state) is True
    for pid in pids:
        assert not embedded._pid_alive(pid), f"process {pid} survived stop"
    for d in m.cgroup_dirs:
        assert not os.path.exists(d), f"cgroup {d} left behind"
    assert embedded.status(state) is None


def test_host_tmp_marker_and_sysctls_survive_a_start_stop_cycle(state: Path) -> None:
    marker = Path("/tmp") / f"sandboxed-host-marker-{os.getpid()}"
    marker.write_text("keep me")
    before = {k: Path("/proc/sys", k).read_text() for k in SYSCTLS if Path("/proc/sys", k).exists()}
    tmp_before = set(os.listdir("/tmp"))
    try:
        embedded.start(state)
        time.sleep(0.5)
        embedded.stop(state)
        assert marker.read_text() == "keep me"
        assert tmp_before - set(os.listdir("/tmp")) == set()
        after = {k: Path("/proc/sys", k).read_text() for k in before}
        assert after == before
    finally:
        marker.unlink(missing_ok=True)


def test_only_our_own_units_exist_in_the_manager(state: Path) -> None:
    m = embedded.start(state)
    c = ManagerClient(m.address)
    names = {u[0] for u in c.list_units()}
    c.close()
    assert "dbus.service" in names
    host_services = {
        "systemd-tmpfiles-setup.service",
        "postgresql.service",
        "getty@tty1.service",
        "systemd-sysctl.service",
        "systemd-modules-load.service",
        "systemd-logind.service",
    }
    assert names & host_services == set()
    services = {n for n in names if n.endswith(".service")}
    assert services <= {"dbus.service"}, services


def _listing(path: Path) -> set[str] | None:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else None


def test_what_the_manager_would_write_to_etc_systemd_fails_and_the_host_keeps_its_own(
    state: Path,
) -> None:
    # The manager shares the host's file system: a persistent set-property on a unit
    # loaded from a file writes a drop-in into the host's own
    # /etc/systemd/system.control (seen before the fix; a transient unit's go to its
    # private /run). dbus.service is such a unit of the embedded manager.
    m = embedded.start(state)
    etc = Path("/etc/systemd")
    before = {d: _listing(etc / d) for d in ("system.control", "system")}
    subprocess.run(
        [*m.tool_prefix, "systemctl", "set-property", "dbus.service", "CPUWeight=100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert {d: _listing(etc / d) for d in before} == before
    # systemd 252 reports success for it (it does not say that it could not write the
    # drop-in); no drop-in holds the setting. (dbus.service may have drop-ins of ours,
    # under our unit directory: on systemd 254-256, see embedded.REFUSE_RELOAD_ON_BUS.)
    show = [*m.tool_prefix, "systemctl", "show", "-p", "DropInPaths", "dbus.service"]

    def dropins() -> list[str]:
        out = subprocess.run(show, capture_output=True, text=True).stdout.strip()
        return out.removeprefix("DropInPaths=").split()

    assert [p for p in dropins() if "CPUWeight" in p or "control" in p] == []
    # The runtime form (the manager's private /run) still works.
    runtime = subprocess.run(
        [*m.tool_prefix, "systemctl", "set-property", "--runtime", "dbus.service", "CPUWeight=100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert runtime.returncode == 0, runtime.stderr
    assert any(p.startswith("/run/systemd/system.control/dbus.service.d/") for p in dropins())
    assert {d: _listing(etc / d) for d in before} == before


def test_second_start_reuses_the_running_manager(state: Path) -> None:
    first = embedded.start(state)
    second = embedded.start(state)
    assert second.pid == first.pid


def test_concurrent_starts_from_two_processes_share_one_manager(state: Path) -> None:
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from sandboxed.systemd import embedded
        print(embedded.start(Path({str(state)!r})).pid)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(embedded.__file__).parents[2]))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    pids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(pids) == 1 and pids != {""}
    assert embedded.status(state) is not None


def test_a_stale_manager_is_detected_and_replaced(state: Path) -> None:
    old = embedded.start(state)
    old_procs = [old.keeper_pid, old.pid, *_procs_of(old)]
    for pid in old_procs:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(embedded._pid_alive(p) for p in old_procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert embedded.status(state) is None
    new = embedded.start(state)
    assert new.pid != old.pid
    c = ManagerClient(new.address)
    assert c.version
    c.close()


def _start_code(state: Path) -> str:
    return (
        "from pathlib import Path; from sandboxed import embedded; "
        f"embedded.start(Path({str(state)!r}))"
    )


def test_missing_systemd_binary_is_a_clear_error(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOXED_SYSTEMD", "/nonexistent/systemd")
    with pytest.raises(EmbeddedManagerError, match=r"no systemd binary.*/nonexistent/systemd"):
        embedded.start(state)


def test_a_manager_that_never_comes_up_fails_with_its_log_tail_and_leaves_nothing(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-systemd"
    fake.write_text("#!/bin/sh\necho 'fake manager: refusing to boot today'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SANDBOXED_SYSTEMD", str(fake))
    with pytest.raises(EmbeddedManagerError) as info:
        embedded.start(state, timeout=3)
    assert "did not come up" in str(info.value)
    assert "refusing to boot today" in info.value.log_tail
    left = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True).stdout
    assert left.strip() == ""
    assert not any(
        p.name.startswith(embedded._child_cgroup(state))
        for p in Path("/sys/fs/cgroup/systemd").iterdir()
    )


def test_not_root_is_refused_before_anything_starts(state: Path, tmp_path: Path) -> None:
    import shutil

    # nobody may not read root's site-packages: give it a copy of what the import needs.
    import tempfile

    import attr
    import attrs

    libs = Path(tempfile.mkdtemp(prefix="sandboxed-test-libs-"))
    request_cleanup = libs
    for mod in (attrs, attr):
        shutil.copytree(Path(mod.__file__).parent, libs / mod.__name__)
    for p in [libs, *libs.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    code = _start_code(state)
    env = dict(os.environ, PYTHONPATH=f"{Path(embedded.__file__).parents[2]}:{libs}")
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    if (
        "Permission denied" in r.stderr
        and "python" in r.stderr.lower()
        and "EmbeddedManagerError" not in r.stderr
    ):
        pytest.skip("the interpreter is not executable by nobody here")
    shutil.rmtree(request_cleanup, ignore_errors=True)
    assert r.returncode != 0
    assert "needs root" in r.stderr
    assert not state.exists() or not (state / "state.json").exists()


def test_read_only_cgroup_file_system_is_named_in_the_error(state: Path) -> None:
    code = _start_code(state)
    script = (
        "set -e; for m in $(awk '$5 ~ \"^/sys/fs/cgroup/\" {print $5}' /proc/self/mountinfo); do "
        'mount -o remount,bind,ro "$m"; done; '
        f'exec {sys.executable} -c "{code}"'
    )
    env = dict(os.environ, PYTHONPATH=str(Path(embedded.__file__).parents[2]))
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode != 0
    assert "not writable at /sys/fs/cgroup/" in r.stderr
