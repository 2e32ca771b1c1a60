"""The ``sandboxed`` command line (also ``python -m sandboxed``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sandboxed._errors import SandboxError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(
    name: str, help: str
) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[Command], Command]]:
    def register_args(
        args_fn: Callable[[argparse.ArgumentParser], None],
    ) -> Callable[[Command], Command]:
        def register(fn: Command) -> Command:
            COMMANDS[name] = (help, args_fn, fn)
            return fn

        return register

    return register_args


def _embedded_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["start", "status", "stop"])


@command(
    "embedded", "start, inspect or stop the embedded systemd (hosts whose PID 1 is not systemd)"
)(_embedded_args)
def _embedded(ns: argparse.Namespace) -> int:
    from sandboxed import embedded

    if ns.action == "start":
        started = embedded.start()
        print(
            f"embedded manager running: pid {started.pid}, bus {started.bus_address}, "
            f"cgroup layout {started.layout}"
        )
        return 0
    if ns.action == "status":
        m = embedded.status()
        if m is None:
            print("embedded manager: not running")
            return 3
        print(
            f"embedded manager running: pid {m.pid}, bus {m.bus_address}, cgroup layout {m.layout}"
        )
        return 0
    was = embedded.stop()
    print("embedded manager stopped" if was else "embedded manager was not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandboxed", description="Run Python calls inside systemd transient units."
    )
    parser.add_argument("--manager", help="D-Bus address of the service manager to use")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, args_fn, _fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        args_fn(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _load_commands()
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.manager:
        from sandboxed import _manager

        _manager.configure(ns.manager)
    try:
        return COMMANDS[ns.command][2](ns)
    except SandboxError as e:
        print(f"sandboxed {ns.command}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        rest = str(e).splitlines()[1:]
        if rest:
            print("\n".join(rest), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _load_commands() -> None:
    """Import the modules that register further commands."""
    import importlib

    for mod in ("sandboxed._cli_units", "sandboxed._cli_security"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
