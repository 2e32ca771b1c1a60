"""``sandboxed security``: the exposure score of a sandbox, as systemd assesses it.

``sandboxed security UNIT`` assesses a live unit (``sandboxed ls`` lists them);
``sandboxed security --preset Hardened [-p Directive=value...]`` starts a
sandbox with those options, assesses it and stops it again. ``--threshold``
makes the exit status 1 when the score is above it (for CI).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sandboxed.api.security import security_report
from sandboxed.cli.options import Command, add_sandbox_options, build_options
from sandboxed.systemd.security import SecurityReport


def _security_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("unit", nargs="?", help="a live unit to assess (default: start one)")
    add_sandbox_options(p, "start and assess")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--all", action="store_true", help="list every setting, not only the exposed")
    p.add_argument(
        "--threshold",
        type=float,
        metavar="SCORE",
        help="exit with status 1 when the exposure is above SCORE (0.0-10.0)",
    )


def render(report: SecurityReport, everything: bool = False) -> str:
    """The report as text: the score, then the settings that cost exposure (or all)."""
    lines = [f"{report.unit}: exposure {report.score:.1f} {report.rating}"]
    rows = report.items if everything else report.exposed
    if rows:
        width = max(len(i.name) for i in rows)
        for i in rows:
            mark = {True: "ok ", False: "-- ", None: "   "}[i.ok]
            cost = f"{i.exposure:4.1f}" if i.exposure is not None else "    "
            lines.append(f"  {mark}{i.name:<{width}}  {cost}  {i.description}")
    return "\n".join(lines)


def _assess_new(presets: list[str], properties: list[str]) -> SecurityReport:
    from sandboxed.runtime import registry

    options = build_options(presets, properties)
    sandbox: Any = registry.get(options)
    try:
        return security_report(sandbox)
    finally:
        sandbox.shutdown()


def _security(ns: argparse.Namespace) -> int:
    if ns.unit and (ns.preset or ns.property):
        raise SystemExit("sandboxed security: give a unit or --preset/-p options, not both")
    if ns.unit:
        from sandboxed.systemd import locate

        # A live unit needs a live manager: never boot one only to say it has no such unit.
        locate.current(start_embedded=False)
    report = security_report(ns.unit) if ns.unit else _assess_new(ns.preset, ns.property)
    if ns.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report, everything=ns.all))
    if ns.threshold is not None and report.score > ns.threshold:
        return 1
    return 0


COMMAND = Command(
    "show the exposure score systemd gives a sandbox (systemd-analyze security)",
    _security_args,
    _security,
)
