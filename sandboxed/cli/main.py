"""The ``sandboxed`` command line (also ``python -m sandboxed``).

Every command is listed in :data:`COMMANDS`; a new command is a module of this
package with a :class:`~sandboxed.cli.options.Command` and a line here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sandboxed._errors import SandboxError
from sandboxed.cli import doctor, embedded, run, security, units
from sandboxed.cli.options import Command

COMMANDS: dict[str, Command] = {
    "embedded": embedded.COMMAND,
    "doctor": doctor.COMMAND,
    "run": run.COMMAND,
    "ls": units.LS,
    "stop": units.STOP,
    "gc": units.GC,
    "security": security.COMMAND,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandboxed", description="Run Python calls inside systemd transient units."
    )
    parser.add_argument("--manager", help="D-Bus address of the service manager to use")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.manager:
        from sandboxed.systemd import locate

        locate.configure(ns.manager)
    try:
        return COMMANDS[ns.command].run(ns)
    except SandboxError as e:
        _error(ns.command, str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # Permissions, missing files, a socket that went away: the system's words
        # and the path, not our traceback.
        where = f": {e.filename}" if e.filename is not None else ""
        _error(ns.command, f"{e.strerror or e}{where} ({type(e).__name__})")
        return 1
    except Exception as e:
        if os.environ.get("SANDBOXED_DEBUG"):
            raise
        _error(
            ns.command,
            f"unexpected {type(e).__name__}: {e}\n"
            "this is a bug in sandboxed: please report it; SANDBOXED_DEBUG=1 shows the traceback",
        )
        return 1


def _error(command: str, message: str) -> None:
    """``sandboxed <command>: error: <first line>``, then the rest of the message."""
    lines = message.splitlines() or [""]
    print(f"sandboxed {command}: error: {lines[0]}", file=sys.stderr)
    if lines[1:]:
        print("\n".join(lines[1:]), file=sys.stderr)
