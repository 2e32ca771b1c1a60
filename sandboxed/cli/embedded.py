"""``sandboxed embedded start|status|stop``: the embedded systemd from a shell."""

from __future__ import annotations

import argparse

from sandboxed.cli.options import Command


def _embedded_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument(
        "--force",
        action="store_true",
        help="stop: also while other processes run sandboxes in it (their calls fail, "
        "and they do not start it again)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop: wait up to SECONDS for other processes' sandboxes to finish",
    )


def _embedded(ns: argparse.Namespace) -> int:
    from sandboxed.systemd import embedded

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
    was = embedded.stop(force=ns.force, wait=ns.wait)
    print("embedded manager stopped" if was else "embedded manager was not running")
    return 0


COMMAND = Command(
    "start, inspect or stop the embedded systemd (hosts whose PID 1 is not systemd)",
    _embedded_args,
    _embedded,
)
