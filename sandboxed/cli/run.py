"""``sandboxed run``: run a callable (``pkg.mod:func``) or a script in a sandbox.

The sandbox is built from presets and directives spelled as for
``systemd-run -p``; the code runs as ``python`` would run it (``sys.argv`` set,
a script as ``__main__``), its output appears here as it is printed, and the
command exits with its status.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from sandboxed._errors import ConfigurationError
from sandboxed.cli.options import Command, add_sandbox_options, build_options

# -- run ------------------------------------------------------------------------------------


def _run_args(p: argparse.ArgumentParser) -> None:
    add_sandbox_options(p, "run")
    p.add_argument(
        "-E",
        "--setenv",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="pass an environment variable (NAME alone copies it from here)",
    )
    p.add_argument("--timeout", type=float, help="stop the call after this many seconds")
    p.add_argument(
        "--untrusted",
        action="store_true",
        help="decode what comes back as plain data only (safe results)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="write the sandbox's output to a terminal as it is (control characters "
        "and escape sequences are escaped by default)",
    )
    p.add_argument(
        "-d",
        "--same-dir",
        action="store_true",
        help="run in the current directory (WorkingDirectory=), as systemd-run -d does",
    )
    p.add_argument("target", help="pkg.mod:func, or a script path ending in .py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments, passed as strings")


def parse_target(target: str) -> tuple[str, str]:
    """``("script", path)`` or ``("call", "pkg.mod:func")``; ConfigurationError otherwise."""
    if target.endswith(".py") or os.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ConfigurationError(f"no such script: {target}")
        return "script", path
    mod, sep, func = target.partition(":")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if (
        not sep
        or not re.fullmatch(rf"{ident}(\.{ident})*", mod)
        or not re.fullmatch(rf"{ident}(\.{ident})*", func)
    ):
        raise ConfigurationError(
            f"invalid target {target!r}; accepted: pkg.module:function, or a path to a .py script"
        )
    return "call", target


def _entry(kind: str, target: str, argv: list[str]) -> int:
    """Runs inside the sandbox: the script or callable, as ``python`` would; its exit status."""
    import importlib
    import runpy
    import traceback

    code: int = 0
    try:
        if kind == "script":
            sys.argv = [target, *argv]
            sys.path.insert(0, os.path.dirname(target))
            runpy.run_path(target, run_name="__main__")
        else:
            mod_name, _, qual = target.partition(":")
            sys.argv = [target, *argv]
            try:
                obj: Any = importlib.import_module(mod_name)
            except ModuleNotFoundError as e:
                if e.name is not None and mod_name.startswith(e.name):
                    print(
                        f"sandboxed run: error: cannot import {mod_name!r} in the sandbox: {e}",
                        file=sys.stderr,
                    )
                    return 2
                raise
            for part in qual.split("."):
                try:
                    obj = getattr(obj, part)
                except AttributeError:
                    print(
                        f"sandboxed run: error: {target!r}: module {mod_name!r} has no "
                        f"attribute {qual!r}; accepted: pkg.module:function",
                        file=sys.stderr,
                    )
                    return 2
            if not callable(obj):
                print(
                    f"sandboxed run: error: {target!r} is a {type(obj).__name__}, "
                    "not a function to call",
                    file=sys.stderr,
                )
                return 2
            result = obj(*argv)
            if result is not None:
                print(result)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:  # report it as python would, then exit 1
        # Hide our own frames (and runpy's): the user's code starts below them.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        if kind == "script":
            user = tb
            while user is not None and user.tb_frame.f_code.co_filename != target:
                user = user.tb_next
            tb = user or tb
        traceback.print_exception(type(e), e, tb)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _check_reach(options: Any, code_dir: str) -> None:
    """Fail before the call when the sandbox's user cannot read the code to run."""
    from sandboxed._errors import UnreachableCodeError
    from sandboxed.runtime.plan import reach_directives

    for err in reach_directives(options)[3]:
        if isinstance(err, UnreachableCodeError) and (
            code_dir == err.path or code_dir.startswith(err.path.rstrip("/") + "/")
        ):
            raise err


def _run(ns: argparse.Namespace) -> int:
    from sandboxed.runtime import registry

    kind, target = parse_target(ns.target)
    here = os.path.dirname(target) if kind == "script" else os.getcwd()
    options = build_options(
        ns.preset,
        ns.property,
        ns.setenv,
        ns.timeout,
        ns.untrusted,
        ns.same_dir,
        here,
        raw_output=ns.raw,
    )
    # The worker imports from the caller's sys.path, which sandboxed makes reachable
    # (read-only) for the unit's user: put the code's own directory on it, as python does.
    if here not in sys.path:
        sys.path.insert(0, here)
    _check_reach(options, os.path.realpath(here))
    sys.stdout.flush()
    try:
        status = registry.get(options).call(_entry, (kind, target, list(ns.args)), {})
    finally:
        registry.shutdown()
    if isinstance(status, bool) or not isinstance(status, int):
        return 1
    return status & 0xFF if status >= 0 else 1


COMMAND = Command(
    "run pkg.mod:func or a script in a sandbox; exit with its status", _run_args, _run
)
