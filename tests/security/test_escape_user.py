"""User switch (User=, DynamicUser=) and NoNewPrivileges= against code that wants root.

The sandbox runs as ``nobody`` (AsUser) or as a dynamic user (Hardened). Root's
processes to signal are started in the manager's own PID namespace, the one the
sandbox sees. The setuid binary is a root-owned setuid copy of ``id`` made for
the test (outside /tmp, so that PrivateTmp= does not hide it) and removed after.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escape_kit import OK, attempt, in_sandbox

from sandboxed import AsUser, Hardened

pytestmark = pytest.mark.systemd

NOBODY = in_sandbox(AsUser("nobody"))
NOBODY_NNP = in_sandbox(AsUser("nobody"), NoNewPrivileges=True)
HARDENED = in_sandbox(Hardened)
UNPRIVILEGED = pytest.mark.parametrize(
    "box", [NOBODY, NOBODY_NNP, HARDENED], ids=["nobody", "nobody+NoNewPrivileges", "Hardened"]
)


@pytest.fixture(scope="module")
def root_sleeper(systemd: Any) -> Iterator[int]:
    """The PID (as the sandbox sees it) of a ``sleep`` running as root in the manager."""
    unit = f"sandboxed-escape-sleep-{secrets.token_hex(3)}.service"
    r = systemd.run(["systemd-run", "--unit", unit, "--collect", "/bin/sleep", "300"])
    assert r.returncode == 0, r.stderr
    try:
        pid = 0
        for _ in range(50):
            out = systemd.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout
            pid = int(out.strip() or 0)
            if pid:
                break
            time.sleep(0.1)
        assert pid, f"{unit} did not start"
        yield pid
        state = systemd.run(["systemctl", "is-active", unit]).stdout.strip()
        assert state == "active", f"root's sleep was hurt: {unit} is {state}"
    finally:
        systemd.run(["systemctl", "stop", unit])


@pytest.fixture(scope="module")
def setuid_id() -> Iterator[Path]:
    """A root-owned setuid copy of /usr/bin/id, in a directory only root may write."""
    d = Path(tempfile.mkdtemp(prefix="sandboxed-suid-", dir="/var/lib"))
    try:
        d.chmod(0o755)
        exe = d / "id"
        shutil.copy2("/usr/bin/id", exe)
        os.chown(exe, 0, 0)
        exe.chmod(0o4755)
        yield exe
    finally:
        shutil.rmtree(d)


def read(path: str) -> str:
    return attempt(lambda: Path(path).read_bytes())


def signal_process(pid: int, sig: int) -> str:
    return attempt(lambda: os.kill(pid, sig))


def become_root() -> dict[str, str]:
    return {
        "setuid": attempt(lambda: os.setuid(0)),
        "seteuid": attempt(lambda: os.seteuid(0)),
        "setresuid": attempt(lambda: os.setresuid(0, 0, 0)),
        "setgid": attempt(lambda: os.setgid(0)),
        "setgroups": attempt(lambda: os.setgroups([0])),
    }


def run_setuid(exe: str) -> tuple[int, str]:
    """(our euid, the euid the setuid binary reports)."""
    out = subprocess.run([exe, "-u"], capture_output=True, text=True, check=True).stdout
    return os.geteuid(), out.strip()


def run_su() -> tuple[int, str]:
    r = subprocess.run(
        ["/usr/bin/su", "root", "-c", "id -u"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.returncode, r.stdout.strip()


def no_new_privs() -> str:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(line.split()[1] for line in status if line.startswith("NoNewPrivs:"))


@UNPRIVILEGED
def test_a_root_only_file_cannot_be_read(box: Any, root_only_file: Path) -> None:
    assert box(read, str(root_only_file)) == "PermissionError EACCES"
    assert box(read, "/etc/shadow") == "PermissionError EACCES"


def pid1_is_its_own() -> bool:
    """True when PID 1 in this sandbox's view is a process of its own (PrivatePIDs=)."""
    try:
        status = Path("/proc/1/status").read_text()
        comm = Path("/proc/1/comm").read_text().strip()
    except OSError:
        return False
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    return comm != "systemd" and int(uid) == os.getuid()


@UNPRIVILEGED
def test_a_root_process_cannot_be_signalled(box: Any, root_sleeper: int) -> None:
    # Signal 0 asks only whether we may: safe to aim at the manager (PID 1) as well.
    # Under PrivatePIDs= (Hardened on systemd 257+) PID 1 is the sandbox's own
    # supervisor: the manager has no PID in its namespace to aim at.
    if not box(pid1_is_its_own):
        assert box(signal_process, 1, 0) != OK
    assert box(signal_process, root_sleeper, signal.SIGKILL) != OK
    # root_sleeper's teardown asserts the sleep is still running.


@UNPRIVILEGED
def test_the_user_cannot_become_root(box: Any) -> None:
    outcomes = box(become_root)
    assert {k: v for k, v in outcomes.items() if v == OK} == {}


def test_the_setuid_binary_would_make_nobody_root_without_no_new_privileges(
    setuid_id: Path,
) -> None:
    # The control: the setuid bit works for nobody when nothing forbids it (not even the
    # containment baseline, whose NoNewPrivileges= forbids it in every sandbox).
    bare = in_sandbox(AsUser("nobody"), containment=False)
    assert bare(run_setuid, str(setuid_id)) == (65534, "0")


def test_the_containment_baseline_alone_makes_setuid_binaries_grant_nothing(
    setuid_id: Path,
) -> None:
    assert NOBODY(run_setuid, str(setuid_id))[1] != "0"


@pytest.mark.parametrize("box", [NOBODY_NNP, HARDENED], ids=["nobody+NoNewPrivileges", "Hardened"])
def test_setuid_binaries_grant_nothing_with_no_new_privileges(box: Any, setuid_id: Path) -> None:
    assert box(no_new_privs) == "1"
    euid, setuid_euid = box(run_setuid, str(setuid_id))
    assert setuid_euid == str(euid) != "0"
    code, out = box(run_su)
    assert code != 0 and out != "0"
