"""Rootless mode, against a real user manager: what holds is probed from inside, what
cannot hold is refused before a unit starts.

Every test runs Python as the test user (see ``conftest.py``), in a subprocess,
with the public API; probes run inside real units of that user's manager.
"""

from __future__ import annotations

import os

import pytest
from rootless_kit import UserSession

pytestmark = pytest.mark.systemd

# Shared by the snippets: how many jobs the user manager ever installed (a unit start
# is a job), so a test can tell that a refusal came before any unit was asked for.
JOBS = """
from sandboxed.systemd.bus import ManagerClient
import os
_mc = ManagerClient("unix:path=" + os.environ["XDG_RUNTIME_DIR"] + "/bus")
def jobs():
    return int(_mc.get_property("/org/freedesktop/systemd1",
                                "org.freedesktop.systemd1.Manager", "NInstalledJobs"))
"""

# Probes run inside the unit; they travel by value (defined in the snippet's __main__).
PROBE = """
def look():
    import os, socket
    out = {"uid": os.getuid(), "cgroup": open("/proc/self/cgroup").read(),
           "uid_map": open("/proc/self/uid_map").read().split()}
    out["ifaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
    st = {}
    for l in open("/proc/self/status"):
        k, _, v = l.partition(":")
        st[k] = v.strip()
    out["nnp"], out["seccomp"] = st["NoNewPrivs"], st["Seccomp"]
    def writable(path):
        try:
            with open(path, "w") as f:
                f.write("x")
            os.unlink(path)
            return True
        except OSError:
            return False
    out["root_writable"] = writable("/etc/.sandboxed-rootless-probe")
    try:  # left there: the caller looks for it in the host's home
        with open(os.path.expanduser("~/.sandboxed-rootless-probe"), "w") as f:
            f.write("inside")
        out["home_writable"] = True
    except OSError:
        out["home_writable"] = False
    try:
        with open("/tmp/sandboxed-rootless-marker", "w") as f:
            f.write("inside")
        out["tmp"] = "written"
    except OSError as e:
        out["tmp"] = str(e)
    out["home"] = sorted(os.listdir(os.path.expanduser("~"))) if os.path.isdir(
        os.path.expanduser("~")) else None
    return out
"""


def test_a_non_root_caller_gets_its_own_user_manager_by_default(user: UserSession) -> None:
    r = user.run(
        PROBE
        + """
import os
from sandboxed import sandboxed
result = sandboxed()(look)()
os.unlink(os.path.expanduser("~/.sandboxed-rootless-probe"))
"""
    )
    seen = r.result
    assert seen["uid"] == user.uid
    assert f"/user@{user.uid}.service/" in seen["cgroup"]


@pytest.mark.parametrize(
    ("presets", "expect"),
    [
        ("NoNetwork", {"ifaces": ["lo"]}),
        ("ReadOnly", {"root_writable": False, "home_writable": False}),
        ("PrivateTmp", {"tmp_private": True}),
        ("NoNetwork, ReadOnly", {"ifaces": ["lo"], "root_writable": False, "tmp_private": True}),
    ],
    ids=["NoNetwork", "ReadOnly", "PrivateTmp", "NoNetwork|ReadOnly"],
)
def test_namespace_presets_hold_as_a_non_root_user(
    user: UserSession, presets: str, expect: dict[str, object]
) -> None:
    # Alone, a user manager accepts these and silently ignores them; sandboxed adds
    # PrivateUsers=yes, under which they are enforced: probed here, not assumed.
    r = user.run(
        PROBE
        + f"""
import os
from sandboxed import sandboxed, NoNetwork, ReadOnly, PrivateTmp
marker = "/tmp/sandboxed-rootless-marker"
if os.path.exists(marker):
    os.unlink(marker)
seen = sandboxed({presets})(look)()
seen["tmp_private"] = not os.path.exists(marker)
for left in (marker, os.path.expanduser("~/.sandboxed-rootless-probe")):
    if os.path.exists(left):
        os.unlink(left)
result = seen
"""
    )
    seen = r.result
    for key, value in expect.items():
        assert seen[key] == value, (key, seen)
    # A user namespace of its own, in which only the caller's uid is mapped.
    assert seen["uid_map"] == [str(user.uid), str(user.uid), "1"]


def test_seccomp_and_no_new_privileges_hold_as_a_non_root_user(user: UserSession) -> None:
    r = user.run(
        """
import errno, probes
from sandboxed import sandboxed
filtered = sandboxed(
    SystemCallFilter="~getpriority", SystemCallErrorNumber="EPERM", NoNewPrivileges=True
)
result = {
    "inside": filtered(probes.getpriority_errno)(),
    "status": filtered(probes.status_fields)("NoNewPrivs", "Seccomp"),
    "control": sandboxed()(probes.getpriority_errno)(),
    "EPERM": errno.EPERM,
}
"""
    )
    seen = r.result
    assert seen["inside"] == seen["EPERM"]
    assert seen["control"] == 0
    assert seen["status"] == {"NoNewPrivs": "1", "Seccomp": "2"}


def test_hardened_holds_in_its_rootless_form(user: UserSession) -> None:
    r = user.run(
        PROBE
        + """
import os
from sandboxed import sandboxed, Hardened
fn = sandboxed(Hardened)(look)
probe = os.path.expanduser("~/.sandboxed-rootless-probe")
result = {"seen": fn(), "notes": list(fn.sandbox.notes), "on_host": os.path.exists(probe)}
if result["on_host"]:
    os.unlink(probe)
"""
    )
    seen = r.result["seen"]
    assert seen["ifaces"] == ["lo"]
    assert seen["nnp"] == "1" and seen["seccomp"] == "2"
    assert not seen["root_writable"]
    # ProtectHome=tmpfs: what is written to the home stays in the sandbox's tmpfs.
    assert not r.result["on_host"]
    notes = "\n".join(r.result["notes"])
    assert "DynamicUser=" in notes and "PrivateUsers=yes" in notes
    # ProtectHome=tmpfs: the home is empty but for what the worker needs, read-only.
    assert set(seen["home"]) - {".sandboxed-rootless-probe"} <= {"sandboxed-test-venv"}
    assert seen["uid"] == user.uid


@pytest.mark.parametrize(
    ("directive", "why"),
    [
        ("CPUQuota=0.2", "controller"),
        ("MemoryMax='64M'", "controller"),
        ("TasksMax=8", "controller"),
        ("User='nobody'", "root"),
        ("Group='nogroup'", "root"),
        ("DynamicUser=True", "root"),
        ("ProtectProc='invisible'", "user manager"),
        ("RemoveIPC=True", "user manager"),
    ],
)
def test_what_a_user_manager_cannot_hold_is_refused_before_any_unit_starts(
    user: UserSession, directive: str, why: str
) -> None:
    name = directive.split("=", 1)[0]
    r = user.run(
        JOBS
        + f"""
from sandboxed import sandboxed
before = jobs()
try:
    fn = sandboxed({directive})(abs)
    fn(-1)
    raise SystemExit("not refused")
finally:
    after = jobs()
    print("jobs", before, after)
"""
    )
    err = r.error
    assert "sandboxed._errors.ConfigurationError" in err["mro"] or any(
        m.endswith(".ConfigurationError") for m in err["mro"]
    ), err
    assert err["attrs"].get("directive") == name
    msg = err["message"]
    assert f"{name}=" in msg and why in msg, msg
    assert len(msg.splitlines()) == 1
    jobs_line = [line for line in r.stdout.splitlines() if line.startswith("jobs ")][-1]
    _, before, after = jobs_line.split()
    assert before == after, "a unit was started before the directive was refused"


def test_user_equal_to_the_caller_is_accepted(user: UserSession) -> None:
    r = user.run(
        f"""
import os
from sandboxed import sandboxed
result = sandboxed(User={user.name!r})(os.getuid)()
"""
    )
    assert r.result == user.uid


ESCAPES = """
def escape():
    import glob, os, socket
    out = {}
    for path in ("/run/user/%(uid)d/bus", "/run/user/%(uid)d/systemd/private"):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            out[path] = "connected"
        except OSError as e:
            out[path] = e.strerror
        finally:
            s.close()
    mine = "user.slice/user-%(uid)d.slice/user@%(uid)d.service"
    procs = glob.glob("/sys/fs/cgroup/*/" + mine + "/cgroup.procs")
    procs += glob.glob("/sys/fs/cgroup/unified/" + mine + "/*/cgroup.procs")
    moved = []
    for p in procs:
        try:
            with open(p, "a") as f:
                f.write(str(os.getpid()))
            moved.append(p)
        except OSError:
            pass
    out["moved"] = moved
    out["tried"] = len(procs)
    return out
"""


@pytest.mark.parametrize("presets", ["", "NoNetwork", "NoNetwork, ReadOnly"])
def test_a_rootless_sandbox_can_neither_reach_the_user_manager_nor_leave_its_cgroup(
    user: UserSession, presets: str
) -> None:
    # Through the user manager's sockets the code could start a unit of its own with no
    # sandbox; through the user's own cgroups it could move out of its unit and outlive
    # it. Both were measured before sandboxed hid them. The control: the same probe in
    # the caller (no sandbox) connects and finds the cgroup files.
    r = user.run(
        ESCAPES % {"uid": user.uid}
        + f"""
from sandboxed import sandboxed, NoNetwork, ReadOnly
result = {{"inside": sandboxed({presets})(escape)(), "outside": {{}}}}
import socket
for path in result["inside"]:
    if path.startswith("/run/"):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            result["outside"][path] = "connected"
        except OSError as e:
            result["outside"][path] = e.strerror
        finally:
            s.close()
"""
    )
    seen = r.result
    sockets = [k for k in seen["inside"] if k.startswith("/run/")]
    assert sockets and all(seen["outside"][k] == "connected" for k in sockets), seen
    assert all(seen["inside"][k] != "connected" for k in sockets), seen
    assert seen["inside"]["tried"] > 0, "the probe found no cgroup of the user manager"
    assert seen["inside"]["moved"] == []


def test_hardeneds_exposure_score_in_its_rootless_form(user: UserSession) -> None:
    # docs/without-root.md quotes this figure; systemd-analyze --user assesses the unit.
    r = user.run(
        """
from sandboxed import sandboxed, Hardened, security_report
fn = sandboxed(Hardened)(abs)
fn(-1)
report = security_report(fn)
result = {"score": report.score, "private_users": report.item("PrivateUsers=").ok}
"""
    )
    assert r.result["score"] <= 1.5, r.result
    assert r.result["private_users"] is True


def test_the_callers_home_is_not_hidden_from_its_own_sandbox(user: UserSession) -> None:
    # The unit runs as the caller: a 0700 home is the caller's own, readable as it is
    # (not replaced by a tmpfs because "the sandbox's user" looked unknown).
    import os

    os.chmod(user.home, 0o700)
    try:
        r = user.run(
            """
import os
from sandboxed import sandboxed, NoNetwork
path = os.path.expanduser("~/.profile")
result = sandboxed(NoNetwork)(lambda: open(path).read())() == open(path).read()
"""
        )
    finally:
        os.chmod(user.home, 0o755)
    assert r.result is True


def test_code_the_sandbox_cannot_reach_is_a_clear_error(user: UserSession) -> None:
    # The interpreter lives in the user's home; hiding the home hides it, and that is
    # said before any unit starts, naming the path.
    r = user.run(
        """
import os
from sandboxed import sandboxed
result = sandboxed(InaccessiblePaths=os.path.expanduser("~"))(abs)(-1)
"""
    )
    err = r.error
    assert err["type"] == "UnreachableCodeError", err
    assert user.home in err["message"] and len(err["message"].splitlines()) == 1


def test_an_interpreter_the_user_manager_cannot_reach_is_a_clear_error(
    user: UserSession,
) -> None:
    # Root, with an interpreter under its own 0700 home, pointed at the test user's
    # manager: that manager runs the unit as the user, and cannot bind in what its
    # user cannot traverse. Said before any unit starts, naming the path.
    import sys

    blocked = next(
        (
            p
            for p in ("/root",)
            if sys.executable.startswith(p + "/")
            or os.path.realpath(sys.executable).startswith(p + "/")
        ),
        None,
    )
    if blocked is None or os.stat(blocked).st_mode & 0o001:
        pytest.skip("the suite's interpreter is not under a home other users cannot traverse")
    r = user.run(
        """
from sandboxed import sandboxed, NoNetwork
result = sandboxed(NoNetwork)(abs)(-1)
""",
        as_root=True,
        env={"SANDBOXED_MANAGER": f"unix:path=/run/user/{user.uid}/systemd/private"},
    )
    err = r.error
    assert err["type"] == "UnreachableCodeError", err
    msg = err["message"]
    assert f"below {blocked}" in msg and f"uid {user.uid}" in msg, msg
    assert len(msg.splitlines()) == 1
