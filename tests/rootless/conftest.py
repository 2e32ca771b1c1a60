"""A non-root user with a real user manager, for the rootless tests.

See rootless_kit.py for the full account; the session fixture here creates it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rootless_kit import CHECKOUT, UserSession

TEST_USER = os.environ.get("SANDBOXED_TEST_USER", "sbxtest")
UNIT_DIRS = ("/lib/systemd/system", "/usr/lib/systemd/system")
USER_UNITS = ("user@.service", "user-runtime-dir@.service", "user.slice")

USER_DROPIN = (
    "[Service]\n"
    "Environment=XDG_RUNTIME_DIR=/run/user/%i\n"
    # On cgroup v1 systemd never delegates a controller to an unprivileged manager;
    # the delegated fixture does, by hand, for the memory and pids hierarchies of
    # user@UID.service, when its flag file exists ($$ is a literal $ for systemd).
    "ExecStartPre=+/bin/sh -c 'if [ -e " + "/run/sandboxed-test/delegate-%i ]; then "
    "for h in memory pids; do d=/sys/fs/cgroup/$$h/user.slice/user-%i.slice/user@%i.service; "
    "[ -d $$d ] && chown -R %i $$d; done; fi'\n"
)
# A plain directory on the manager's /run (a host directory), not the tmpfs that
# systemd-user-runtime-dir would mount in the manager's own mount namespace.
RUNTIME_DIR_DROPIN = (
    "[Service]\n"
    "ExecStart=\n"
    "ExecStart=/usr/bin/install -d -o %i -g %i -m 0700 /run/user/%i\n"
    "ExecStop=\n"
    "ExecStop=/bin/rm -rf --one-file-system /run/user/%i\n"
)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the rootless fixture makes a user and its user manager: run the suite as root")


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name)


def _traversable_by_others(path: str) -> str | None:
    """The first directory on ``path``'s way that others cannot traverse (or read), if any."""
    cur = Path("/")
    for part in Path(path).parts[1:]:
        cur = cur / part
        st = cur.stat()
        if cur.is_dir() and not st.st_mode & 0o001:
            return str(cur)
    return None


def _base_interpreter() -> str:
    """An interpreter of this minor version that anyone may run (the checkout's venv may
    point at one under root's 0700 home)."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (os.path.realpath(sys._base_executable), f"/usr/bin/{version}"):  # type: ignore[attr-defined]
        if os.access(candidate, os.X_OK) and _traversable_by_others(candidate) is None:
            return candidate
    pytest.skip(f"no {version} that a non-root user may run (looked under /usr/bin)")


def _user_venv(pw: pwd.struct_passwd) -> str:
    site = sysconfig.get_paths()["purelib"]
    blocked = _traversable_by_others(site) or _traversable_by_others(str(CHECKOUT))
    if blocked:
        pytest.skip(f"{blocked} is not readable by others: the test user cannot load the project")
    venv = Path(pw.pw_dir) / "sandboxed-test-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        make = ["-m", "venv", "--without-pip", str(venv)]
        subprocess.run(
            ["runuser", "-u", pw.pw_name, "--", _base_interpreter(), *make],
            check=True,
            capture_output=True,
            cwd="/",
        )
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    pth = venv / "lib" / version / "site-packages" / "sandboxed-checkout.pth"
    # addsitedir, not a bare path: the checkout's own .pth files (its editable install) must run.
    want = f"import site; site.addsitedir({site!r})\n"
    if not pth.exists() or pth.read_text() != want:
        pth.write_text(want)
        os.chown(pth, pw.pw_uid, pw.pw_gid)
    return str(python)


def _wait_socket(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise AssertionError(f"the user manager's bus {path} did not come up within {timeout:g} s")


@pytest.fixture(scope="session")
def user_session(systemd: Any) -> Iterator[UserSession]:
    """A non-root user with a running user manager inside the embedded system manager."""
    _require_root()
    if systemd.location.kind != "embedded":
        pytest.skip("the rootless fixture builds its user manager inside the embedded manager")
    from sandboxed import embedded

    m = embedded.status()
    assert m is not None, "the embedded manager the suite uses is not running"
    pw = _ensure_user(TEST_USER)
    python = _user_venv(pw)

    unit_dir = m.run_dir / "sandboxed" / "units"
    created: list[Path] = []
    for name in USER_UNITS:
        src = next((Path(d, name) for d in UNIT_DIRS if Path(d, name).exists()), None)
        if src is None:
            pytest.skip(f"the distribution's {name} is not installed (systemd's user units)")
        dst = unit_dir / name
        if not dst.exists():
            shutil.copyfile(src, dst)
            created.append(dst)
    dropins = (("user@.service", USER_DROPIN), ("user-runtime-dir@.service", RUNTIME_DIR_DROPIN))
    for unit, text in dropins:
        d = unit_dir / f"{unit}.d"
        d.mkdir(exist_ok=True)
        (d / "sandboxed-test.conf").write_text(text)
        created.append(d / "sandboxed-test.conf")
    (m.run_dir / "systemd" / "unit-root").mkdir(parents=True, exist_ok=True)
    (m.run_dir / "user").mkdir(mode=0o755, exist_ok=True)

    unit = f"user@{pw.pw_uid}.service"
    r = systemd.run(["systemctl", "start", unit])
    assert r.returncode == 0, f"cannot start {unit}: {r.stderr}"
    runtime = m.run_dir / "user" / str(pw.pw_uid)
    try:
        _wait_socket(runtime / "bus")
        session = UserSession(pw, python, runtime, m.pid, str(m.directory))
        session.restart = lambda: _restart(systemd, unit, runtime)  # type: ignore[attr-defined]
        session.flags = m.run_dir / "sandboxed-test"  # type: ignore[attr-defined]
        yield session
    finally:
        shutil.rmtree(m.run_dir / "sandboxed-test", ignore_errors=True)
        systemd.run(["systemctl", "stop", unit, f"user-runtime-dir@{pw.pw_uid}.service"])
        shutil.rmtree(runtime, ignore_errors=True)
        for path in created:
            path.unlink(missing_ok=True)
        for unit_name in ("user@.service", "user-runtime-dir@.service"):
            d = unit_dir / f"{unit_name}.d"
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _restart(systemd: Any, unit: str, runtime: Path) -> None:
    r = systemd.run(["systemctl", "restart", unit])
    assert r.returncode == 0, f"cannot restart {unit}: {r.stderr}"
    _wait_socket(runtime / "bus")


@pytest.fixture
def user(user_session: UserSession) -> UserSession:
    return user_session


@pytest.fixture(scope="module")
def delegated_user(user_session: UserSession) -> Iterator[UserSession]:
    """The test user, its user manager restarted holding the v1 memory and pids
    controllers (delegated by hand: systemd does not on cgroup v1). Restored after."""
    from sandboxed.systemd.cgroups import cgroup_mounts

    layout, _ = cgroup_mounts()
    if layout == "unified":
        pytest.skip("on cgroup2 systemd delegates itself; test_user_manager covers it")
    flag = user_session.flags / f"delegate-{user_session.uid}"  # type: ignore[attr-defined]
    flag.parent.mkdir(exist_ok=True)
    flag.touch()
    try:
        user_session.restart()  # type: ignore[attr-defined]
        yield user_session
    finally:
        flag.unlink(missing_ok=True)
        user_session.restart()  # type: ignore[attr-defined]
