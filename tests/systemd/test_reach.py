"""Code reachability against a real systemd: a venv, a C extension and a user module
under root's 0700 home, run as ``nobody`` (also with ``ProtectHome=``), and the
cases that truly cannot work failing before any unit starts.

Each case runs a fresh interpreter of a virtual environment created under /root
(the caller's ``sys.path`` is what the sandbox must reach).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.systemd

HERE = Path(__file__).resolve()
CHECKOUT = HERE.parents[2]

USER_MODULE = """
import errno, json, os, sys

def probe(sibling):
    import numpy  # a C extension, from the venv under /root
    try:
        fd = os.open(os.path.join(os.path.dirname(__file__), "new-file"), os.O_CREAT | os.O_WRONLY)
        os.close(fd)
        write = 0
    except OSError as e:
        write = e.errno
    return {
        "uid": os.getuid(),
        "executable": sys.executable,
        "numpy": numpy.__file__,
        "sum": int(numpy.arange(5).sum()),
        "module": __file__,
        "sibling_visible": os.path.exists(sibling),
        "write_errno": write,
    }
"""

SCRIPT = """
import json, os, sys
from sandboxed import UnreachableCodeError, sandboxed
from sandboxed.runtime.client import manager_client

opts = json.loads(sys.argv[1])
module = sys.argv[2]
mod = __import__(module)
fn = sandboxed(**opts)(mod.probe)
try:
    print(json.dumps({"ok": fn(sys.argv[3])}))
except UnreachableCodeError as e:
    units = manager_client().list_units([f"sandboxed-*-{os.getpid()}-*"])
    print(json.dumps({
        "error": type(e).__name__, "path": e.path, "remedy": e.remedy, "message": str(e),
        "unit_name": fn.sandbox.unit_name, "units": [u[0] for u in units],
    }))
"""


@pytest.fixture(scope="module")
def home_tree(systemd: Any) -> Iterator[dict[str, Path]]:
    """/root/sbx-reach-*/: a venv (numpy copied in), user code, an unreadable module."""
    assert os.stat("/root").st_mode & 0o077 == 0, "this test wants root's home to be 0700"
    root = Path(f"/root/sbx-reach-{uuid.uuid4().hex[:8]}")
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    try:
        venv = root / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
        )
        site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
        ours = Path(sysconfig.get_path("purelib"))
        for name in ("numpy", "numpy.libs"):
            if (ours / name).exists():
                shutil.copytree(ours / name, site / name, symlinks=True)
        # sandboxed and its dependencies come from the checkout's environment, after numpy.
        (site / "zz-checkout.pth").write_text(f"{CHECKOUT}\n{ours}\n")
        code = root / "code"
        code.mkdir()
        code.chmod(0o777)  # writable by anyone: only the read-only bind stops writes
        (code / "usermod.py").write_text(USER_MODULE)
        (code / "secretmod.py").write_text(USER_MODULE)
        (code / "secretmod.py").chmod(0o600)
        (code / "script.py").write_text(textwrap.dedent(SCRIPT))
        hidden = root / "hidden"
        hidden.mkdir(mode=0o700)
        hidden.chmod(0o700)
        (hidden / "hiddenmod.py").write_text(USER_MODULE)
        (root / "sibling.txt").write_text("not for the sandbox")
        (root / "sibling.txt").chmod(0o644)
        yield {
            "root": root,
            "python": venv / "bin" / "python",
            "code": code,
            "hidden": hidden,
            "sibling": root / "sibling.txt",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_case(
    tree: dict[str, Path], opts: dict[str, Any], module: str, path: list[Path] | None = None
) -> dict[str, Any]:
    pythonpath = os.pathsep.join(str(p) for p in (path or [tree["code"]]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [
            str(tree["python"]),
            str(tree["code"] / "script.py"),
            json.dumps(opts),
            module,
            str(tree["sibling"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "opts",
    [
        {"User": "nobody"},
        {"User": "nobody", "ProtectHome": "yes"},
        {"User": "nobody", "ProtectHome": "read-only"},
        {"User": "nobody", "ProtectHome": "yes", "ProtectSystem": "strict", "PrivateTmp": True},
    ],
    ids=["user-nobody", "protect-home-yes", "protect-home-read-only", "seed-like-strict"],
)
def test_nobody_runs_code_from_a_venv_and_module_under_roots_0700_home(
    home_tree: dict[str, Path], opts: dict[str, Any]
) -> None:
    got = run_case(home_tree, opts, "usermod")["ok"]
    root = str(home_tree["root"])
    assert got["uid"] == 65534
    assert got["executable"].startswith(root + "/venv/")
    assert got["numpy"].startswith(root + "/venv/"), "numpy must come from the /root venv"
    assert got["sum"] == 10
    assert got["module"] == str(home_tree["code"] / "usermod.py")
    # Nothing was weakened: the rest of /root stays invisible, the code read-only.
    assert got["sibling_visible"] is False
    assert got["write_errno"] == errno.EROFS


def test_a_module_unreadable_by_the_user_fails_before_the_unit_starts(
    home_tree: dict[str, Path],
) -> None:
    got = run_case(home_tree, {"User": "nobody"}, "secretmod")
    assert got.get("error") == "UnreachableCodeError", got
    assert got["path"] == str(home_tree["code"] / "secretmod.py")
    assert got["path"] in got["message"]
    assert "chmod" in got["remedy"]
    assert got["unit_name"] is None and got["units"] == []


def test_a_module_in_a_directory_unreadable_by_the_user_fails_before_the_unit_starts(
    home_tree: dict[str, Path],
) -> None:
    got = run_case(
        home_tree, {"User": "nobody"}, "hiddenmod", path=[home_tree["code"], home_tree["hidden"]]
    )
    assert got.get("error") == "UnreachableCodeError", got
    assert got["path"] == str(home_tree["hidden"])
    assert got["remedy"]
    assert got["unit_name"] is None and got["units"] == []


def test_a_module_inside_inaccessible_paths_fails_before_the_unit_starts(
    home_tree: dict[str, Path],
) -> None:
    opts = {"User": "nobody", "InaccessiblePaths": str(home_tree["code"])}
    got = run_case(home_tree, opts, "usermod")
    assert got.get("error") == "UnreachableCodeError", got
    assert got["path"] == str(home_tree["code"])
    assert "InaccessiblePaths" in got["message"]
    assert got["remedy"]
    assert got["unit_name"] is None and got["units"] == []


def test_the_same_module_is_reachable_as_root_with_protect_home(
    home_tree: dict[str, Path],
) -> None:
    got = run_case(home_tree, {"ProtectHome": "yes"}, "secretmod")["ok"]
    assert got["uid"] == 0
    assert got["module"] == str(home_tree["code"] / "secretmod.py")
    assert got["sibling_visible"] is False
