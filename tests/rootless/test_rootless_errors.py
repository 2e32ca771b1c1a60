"""What a non-root caller is told when no sandbox can be had: one line, with a remedy.

Run as the test user, in a subprocess, against the real managers of the suite.
"""

from __future__ import annotations

from typing import Any

import pytest
from rootless_kit import UserSession

pytestmark = pytest.mark.systemd

CALL = """
import os
from sandboxed import sandboxed
result = sandboxed()(os.getuid)()
"""


def _one_line_with_remedy(err: dict[str, Any]) -> str:
    msg = str(err["message"])
    assert "sandboxed._errors.SandboxError" in err["mro"], err
    assert len(msg.splitlines()) == 1, msg
    assert any(word in msg for word in ("; run ", "; set ", "; use ", "; log in", "; start ")), msg
    return msg


def test_no_user_manager_is_one_line_naming_what_was_looked_for(user: UserSession) -> None:
    # From the host's namespaces (PID 1 is not systemd) with no session at all:
    # no user manager, and the embedded manager needs root.
    err = user.run(CALL, logged_in=False).error
    msg = _one_line_with_remedy(err)
    assert "user manager" in msg and "root" in msg
    assert any(c.endswith(".ManagerNotFoundError") for c in err["mro"])


def test_no_user_manager_at_the_runtime_directory_is_said(user: UserSession) -> None:
    err = user.run(CALL, env={"XDG_RUNTIME_DIR": "/nonexistent-runtime-dir"}).error
    msg = _one_line_with_remedy(err)
    assert "/nonexistent-runtime-dir/bus" in msg


def test_access_denied_on_a_root_manager_says_what_to_use_instead(
    user: UserSession, systemd: Any
) -> None:
    err = user.run(CALL, logged_in=False, env={"SANDBOXED_MANAGER": systemd.address}).error
    msg = _one_line_with_remedy(err)
    assert "AccessDenied" in msg or "denied" in msg
    assert f"uid {user.uid}" in msg
    assert "user manager" in msg
    assert not err["type"].startswith("DBus"), "a private error class leaked"


def test_the_embedded_manager_needing_root_is_one_line(user: UserSession) -> None:
    err = user.run(
        """
from sandboxed import embedded
result = embedded.start()
""",
        logged_in=False,
        env={"SANDBOXED_EMBEDDED_DIR": "/run/sandboxed/nonexistent-rootless-test"},
    ).error
    msg = _one_line_with_remedy(err)
    assert "root" in msg
    assert any(c.endswith(".EmbeddedManagerError") for c in err["mro"])


def test_embedded_stop_as_non_root_prints_one_line_and_no_traceback(
    user: UserSession, systemd: Any
) -> None:
    from sandboxed import embedded

    r = user.cli(
        "embedded",
        "stop",
        logged_in=False,
        env={"SANDBOXED_EMBEDDED_DIR": str(embedded.state_dir())},
    )
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandboxed embedded: error:"), r.stderr
    assert "root" in lines[0]
    # ...and the manager it could not stop is still there.
    assert embedded.status() is not None


def test_doctor_as_non_root_without_a_manager_runs_to_the_end(user: UserSession) -> None:
    r = user.cli("doctor", "--no-start", logged_in=False)
    assert "Traceback" not in r.stderr + r.stdout
    last = r.stdout.strip().splitlines()[-1]
    assert "problem(s)" in last or last == "no problems found", r.stdout
    assert "user manager" in r.stdout


def test_doctor_reports_rootless_capabilities(user: UserSession) -> None:
    r = user.cli("doctor")
    out = r.stdout
    assert "Traceback" not in r.stderr + out, r.stderr
    assert out.strip().splitlines()[-1].endswith(("blocking", "no problems found")), out
    assert f"user manager of uid {user.uid}" in out, out
    # On this hybrid host no controller is delegated to the user: said, with what it refuses.
    rootless = [line for line in out.splitlines() if "rootless" in line]
    assert any("PrivateUsers=yes" in line for line in rootless), out
    assert any("CPUQuota=" in line and "refused" in line for line in rootless), out
    assert any("User=" in line and "root" in line for line in rootless), out


def test_a_host_namespace_caller_reaches_the_user_manager_over_its_session_bus(
    user: UserSession,
) -> None:
    # From the host's namespaces: the session bus socket works (systemd/private would
    # refuse a peer outside the manager's PID namespace). Delegation cannot be checked
    # from here (the manager's cgroups are not where this process sees them): resource
    # controls are refused rather than trusted.
    bus = f"unix:path={user.bus}"
    r = user.run(
        """
from sandboxed import sandboxed, NoNetwork
def ifaces():
    return sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
result = {"ifaces": sandboxed(NoNetwork)(ifaces)()}
try:
    sandboxed(CPUQuota=0.2)(abs)(-1)
    result["cpu"] = "accepted"
except Exception as e:
    result["cpu"] = str(e)
""",
        logged_in=False,
        env={"DBUS_SESSION_BUS_ADDRESS": bus},
    )
    seen = r.result
    assert seen["ifaces"] == ["lo"]
    assert "CPUQuota=20%" in seen["cpu"] and "cannot see the manager's cgroup" in seen["cpu"]


def test_a_session_bus_without_a_user_manager_is_one_line(user: UserSession) -> None:
    # A session bus of its own with no systemd --user on it (dbus-launch in a
    # container, say): the call says so, naming the bus, instead of a D-Bus error.
    r = user.run(
        """
import os, signal, subprocess, tempfile
d = tempfile.mkdtemp(prefix="sandboxed-rootless-bus-")
proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                         "--address=unix:path=" + d + "/bus", "--print-address"],
                        stdout=subprocess.PIPE, text=True)
try:
    address = proc.stdout.readline().strip()
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    from sandboxed import sandboxed
    result = sandboxed()(abs)(-1)
finally:
    proc.terminate()
    proc.wait(10)
    import shutil
    shutil.rmtree(d, ignore_errors=True)
""",
        logged_in=False,
    )
    err = r.error
    msg = _one_line_with_remedy(err)
    assert any(c.endswith(".ManagerNotFoundError") for c in err["mro"]), err
    assert "no systemd manager on the bus" in msg and "sandboxed-rootless-bus-" in msg
