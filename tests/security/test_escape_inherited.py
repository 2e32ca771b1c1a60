"""PrivateTmp= and what a sandbox could inherit from its caller: files, descriptors, environment.

The host's /tmp holds a marker the sandbox must not see, and nothing the
sandbox writes to its /tmp may appear in the host's, during or after the unit.
The caller holds open, inheritable descriptors (a secret file, a listening
socket) and plants a secret in its environment; the worker must see none of them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escape_kit import OK, attempt, in_sandbox

from sandboxed import Hardened, PrivateTmp, ReadOnly

pytestmark = pytest.mark.systemd

TOKEN = secrets.token_hex(8)
SECRET_NAME = "SANDBOXED_ESCAPE_SECRET"

#: Units of their own (SyslogIdentifier=): the test stops them.
TMP_BOXES = pytest.mark.parametrize(
    "box",
    [
        in_sandbox(preset, SyslogIdentifier=f"tmp-{TOKEN}")
        for preset in (PrivateTmp, ReadOnly, Hardened)
    ],
    ids=["PrivateTmp", "ReadOnly", "Hardened"],
)


@pytest.fixture(scope="module")
def host_marker() -> Iterator[Path]:
    marker = Path(f"/tmp/sandboxed-host-marker-{TOKEN}")
    marker.write_text("the host's\n")
    marker.chmod(0o644)
    yield marker
    marker.unlink()


def tmp_view(marker: str, leak: str) -> dict[str, Any]:
    return {
        "marker": attempt(lambda: Path(marker).read_text()),
        "listing": [p for p in os.listdir("/tmp") if TOKEN in p],
        "leak": attempt(lambda: Path(leak).write_text("from the sandbox\n")),
        "var-tmp": attempt(lambda: Path(f"/var/tmp/{Path(leak).name}").write_text("x")),
    }


def _host_copies(name: str) -> list[str]:
    """Every copy of ``name`` the host has in /tmp or /var/tmp, private directories included."""
    found = []
    for base in ("/tmp", "/var/tmp"):
        found += glob.glob(f"{base}/{name}") + glob.glob(f"{base}/systemd-private-*/*/{name}")
    return found


@TMP_BOXES
def test_host_tmp_is_invisible_and_nothing_written_leaks_out(box: Any, host_marker: Path) -> None:
    leak = f"/tmp/sandboxed-leak-{TOKEN}-{secrets.token_hex(3)}"
    view = box(tmp_view, str(host_marker), leak)
    assert view["marker"] == "FileNotFoundError ENOENT"
    assert view["listing"] == []
    assert view["leak"] == view["var-tmp"] == OK  # its own /tmp is writable...
    assert not Path(leak).exists()  # ...and is not the host's
    assert not Path("/var/tmp", Path(leak).name).exists()
    # While the unit runs its /tmp lives in a root-only directory of the host; when
    # the unit stops, that goes too.
    for private in {str(Path(p).parents[1]) for p in _host_copies(Path(leak).name)}:
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    box.sandbox.shutdown()
    deadline = time.monotonic() + 10  # systemd removes them just after the unit stops
    while _host_copies(Path(leak).name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _host_copies(Path(leak).name) == []


def open_descriptors() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the one listdir itself used
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


@pytest.fixture(scope="module")
def caller_state() -> Iterator[dict[str, Any]]:
    """Inheritable descriptors and an environment secret, planted before any unit starts."""
    secret_file = Path(f"/var/tmp/sandboxed-escape-fd-{TOKEN}")
    secret_file.write_text(TOKEN)
    f = open(secret_file)  # noqa: SIM115 - held open on purpose
    os.set_inheritable(f.fileno(), True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(b"\0sandboxed-escape-fd-" + TOKEN.encode())
    listener.listen(1)
    os.set_inheritable(listener.fileno(), True)
    os.environ[SECRET_NAME] = TOKEN
    try:
        yield {"file": str(secret_file), "fds": {f.fileno(), listener.fileno()}}
    finally:
        del os.environ[SECRET_NAME]
        f.close()
        listener.close()
        secret_file.unlink()


#: Option sets used by no other test, so that their units start after caller_state.
FRESH = pytest.mark.parametrize(
    "options",
    [
        {"SyslogIdentifier": f"inherit-{TOKEN}"},
        {"preset": Hardened, "SyslogIdentifier": f"inherit-{TOKEN}"},
    ],
    ids=["plain", "Hardened"],
)


def _fresh(options: dict[str, Any], **more: Any) -> Any:
    opts = dict(options)
    preset = opts.pop("preset", None)
    return in_sandbox(*([preset] if preset else []), **opts, **more)


@FRESH
def test_the_worker_holds_only_its_own_channel(options: dict[str, Any], caller_state: Any) -> None:
    fds = _fresh(options)(open_descriptors)
    sockets = [fd for fd, target in fds.items() if target.startswith("socket:")]
    assert len(sockets) == 1, fds  # the channel to its caller, nothing else
    others = {target for fd, target in fds.items() if fd not in sockets}
    assert others <= {"/dev/null"} | {t for t in others if t.startswith("pipe:")}, fds
    assert caller_state["file"] not in fds.values()


def environment_and_process_environments() -> dict[str, Any]:
    leaked = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            if TOKEN.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                leaked.append(pid)
        except OSError:
            pass
    return {"environ": dict(os.environ), "leaked_in": leaked}


@FRESH
def test_the_callers_environment_is_not_visible(options: dict[str, Any], caller_state: Any) -> None:
    seen = _fresh(options)(environment_and_process_environments)
    assert SECRET_NAME not in seen["environ"]
    assert TOKEN not in repr(seen["environ"])
    assert seen["leaked_in"] == []


@FRESH
def test_an_environment_variable_passed_explicitly_is_visible(
    options: dict[str, Any], caller_state: Any
) -> None:
    seen = _fresh(options, env=[SECRET_NAME])(environment_and_process_environments)
    assert seen["environ"][SECRET_NAME] == TOKEN
