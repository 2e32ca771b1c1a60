"""Running Python as the rootless tests' user (see conftest.py for how it is set up).

The session fixture :func:`user_session` gives a test user (``sbxtest`` unless
``SANDBOXED_TEST_USER`` names another; created with ``useradd`` if missing) a
real ``user@UID.service`` inside the embedded system manager, the way a login
would on a desktop:

* the distribution's ``user@.service``, ``user-runtime-dir@.service`` and
  ``user.slice`` are copied into the embedded manager's unit directory (they
  load on demand: no ``daemon-reload``, which would unload other tests'
  transient units), with drop-ins that set ``XDG_RUNTIME_DIR=/run/user/%i``
  for ``user@`` (there is no logind, so ``pam_systemd`` does not) and make the
  runtime directory a plain directory of the manager's ``/run`` (a host
  directory) instead of a tmpfs in the manager's mount namespace;
* ``run/systemd/unit-root`` is created (a user manager cannot create it, and
  needs it for every unit with a mount namespace);
* the user's interpreter is a venv in the user's own home, made with the
  system's ``python3`` (the checkout's venv may point at an interpreter under
  root's 0700 home), seeing the checkout's site-packages through a ``.pth``.

Tests run Python *as that user*, in a subprocess (:meth:`UserSession.run`),
either "logged in" on the embedded system (its mount, PID and cgroup
namespaces: ``/run/user/UID`` and ``/sys/fs/cgroup`` look as on a desktop) or
from the host's namespaces, talking to the user manager's session bus socket
(its ``systemd/private`` refuses peers outside its PID namespace).

Left behind on purpose, for later runs: the user, its home and the venv in
it. Removed at the end: the user manager, its runtime directory, the unit
files copied in (the embedded manager's own directory goes with ``embedded stop``).
"""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
RESULT_MARK = "@@sandboxed-result@@"

# Run inside the user's interpreter: the test's code, then its `result` as JSON;
# an exception is reported as data (type, its classes, message, traceback?).
HARNESS = """
import json, sys, traceback
def _report(value):
    sys.stdout.write("\\n{mark}" + json.dumps(value, default=repr) + "\\n")
try:
{body}
    _report({{"ok": True, "result": result}})
except BaseException as e:
    _report({{"ok": False, "type": type(e).__name__,
             "mro": [c.__module__ + "." + c.__qualname__ for c in type(e).__mro__],
             "message": str(e), "attrs": {{k: v for k, v in vars(e).items()
                                          if isinstance(v, (str, int, float, bool, type(None)))}}}})
"""


class UserRun:
    """What a snippet run as the test user returned: ``result`` or the exception's data."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        self.stdout, _, tail = proc.stdout.rpartition(RESULT_MARK)
        if not _:
            raise AssertionError(
                f"the snippet did not report (exit {proc.returncode}):\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        self.data: dict[str, Any] = json.loads(tail)
        self.stderr = proc.stderr

    @property
    def ok(self) -> bool:
        return bool(self.data["ok"])

    @property
    def result(self) -> Any:
        assert self.ok, f"the snippet raised {self.data}\nstderr: {self.stderr}"
        return self.data["result"]

    @property
    def error(self) -> dict[str, Any]:
        assert not self.ok, f"the snippet did not raise: {self.data}"
        return self.data


class UserSession:
    """The test user, its user manager and an interpreter it can run.

    ``uid``, ``name``, ``home``, ``python`` (the venv's interpreter),
    ``runtime_dir`` (host path of ``/run/user/UID``), ``bus`` (host path of the
    session bus socket), ``manager_pid`` (host PID of the embedded manager).
    """

    def __init__(
        self,
        pw: pwd.struct_passwd,
        python: str,
        runtime_dir: Path,
        manager_pid: int,
        embedded_dir: str,
    ) -> None:
        self.name = pw.pw_name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.home = pw.pw_dir
        self.python = python
        self.runtime_dir = runtime_dir
        self.bus = runtime_dir / "bus"
        self.manager_pid = manager_pid
        self.embedded_dir = embedded_dir

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(CHECKOUT / "tests"),
            # The suite's embedded manager (root's): a non-root caller must not use it.
            "SANDBOXED_EMBEDDED_DIR": self.embedded_dir,
        }
        base.update(extra)
        return {k: v for k, v in base.items() if v != ""}

    def argv(self, code: str, logged_in: bool, as_root: bool = False) -> list[str]:
        prefix = []
        if logged_in:
            p = self.manager_pid
            prefix = [
                NSENTER,
                f"--mount=/proc/{p}/ns/mnt",
                f"--pid=/proc/{p}/ns/pid",
                f"--cgroup=/proc/{p}/ns/cgroup",
                "--",
            ]
        if as_root:
            return [*prefix, sys.executable, "-c", code]
        return [*prefix, RUNUSER, "-u", self.name, "--", self.python, "-c", code]

    def run(
        self,
        body: str,
        *,
        logged_in: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 180,
        as_root: bool = False,
    ) -> UserRun:
        """Run ``body`` (Python that sets ``result``) as the user; see :class:`UserRun`.

        ``logged_in``: in the embedded system's namespaces with
        ``XDG_RUNTIME_DIR=/run/user/UID`` (a desktop session); otherwise from
        the host's namespaces with no session variables unless ``env`` gives them.
        ``as_root``: run it as root, with the suite's own interpreter, instead.
        """
        code = HARNESS.format(mark=RESULT_MARK, body=textwrap.indent(textwrap.dedent(body), "    "))
        default = {"XDG_RUNTIME_DIR": f"/run/user/{self.uid}"} if logged_in else {}
        proc = subprocess.run(
            self.argv(code, logged_in, as_root),
            env=self.env(**{**default, **(env or {})}),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return UserRun(proc)

    def cli(
        self, *args: str, logged_in: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m sandboxed ARGS`` as the user."""
        code = (
            "import sys, runpy; sys.argv[0] = 'sandboxed'; "
            "runpy.run_module('sandboxed', run_name='__main__')"
        )
        default = {"XDG_RUNTIME_DIR": f"/run/user/{self.uid}"} if logged_in else {}
        argv = self.argv(code, logged_in) + list(args)
        return subprocess.run(
            argv,
            env=self.env(**{**default, **(env or {})}),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=300,
        )
