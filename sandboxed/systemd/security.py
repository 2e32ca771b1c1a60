"""The exposure score of a live unit, as ``systemd-analyze security`` gives it.

:func:`assess` runs ``systemd-analyze security --no-pager UNIT`` against the
manager that runs the unit (through its tool prefix: the embedded manager's
tools run in its namespaces) and returns a :class:`SecurityReport`: the overall exposure
(0.0 best, 10.0 worst), its rating (``SAFE``, ``OK``, ``MEDIUM``, ``EXPOSED``,
``UNSAFE``) and the per-setting table.

:func:`parse_report` is the pure part: text in, value out.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any, Final

import attrs

from sandboxed._errors import ManagerError

__all__ = ["SecurityItem", "SecurityReport", "assess", "parse_report"]

#: ``systemd-analyze security`` marks: UTF-8 and the ASCII ones it uses otherwise.
_GOOD: Final = frozenset({"✓", "+"})
_BAD: Final = frozenset({"✗", "-"})
_OVERALL: Final = re.compile(
    r"Overall exposure level for (?P<unit>\S+): (?P<score>\d+(?:\.\d+)?) (?P<rating>[A-Z]+)"
)
# Mark, setting name, description, and the exposure (always "N.N") when the setting
# costs something. Names never contain blanks; the widest cell of a column is followed
# by a single one.
_ROW: Final = re.compile(
    r"^(?P<mark>\S)? ?\s?(?P<name>\S+=\S*)\s+(?P<description>\S.*?)"
    r"(?:\s+(?P<exposure>\d+\.\d+))?\s*$"
)
TIMEOUT: Final = 60.0


@attrs.frozen
class SecurityItem:
    """One row of the assessment.

    ``name`` is systemd's (``PrivateNetwork=``, ``RestrictAddressFamilies=~AF_UNIX``);
    ``ok`` is True when the setting is as safe as it can be, False when it costs
    exposure, None when it does not apply to the unit; ``exposure`` is what it
    adds (as systemd prints it, rounded to 0.1), None when nothing.
    """

    name: str
    ok: bool | None
    description: str
    exposure: float | None = None


@attrs.frozen
class SecurityReport:
    """The assessment of one unit: ``score`` (0.0-10.0, lower is safer), ``rating``
    (``SAFE`` below 1.0... ``UNSAFE``), ``items`` (the table) and the ``text`` it came from."""

    unit: str
    score: float
    rating: str
    items: tuple[SecurityItem, ...]
    text: str = attrs.field(repr=False, default="")

    @property
    def exposed(self) -> tuple[SecurityItem, ...]:
        """The settings that cost exposure, most expensive first."""
        bad = [i for i in self.items if i.ok is False]
        return tuple(sorted(bad, key=lambda i: -(i.exposure or 0.0)))

    def item(self, name: str) -> SecurityItem | None:
        """The row called ``name`` (``"PrivateNetwork="``), or None."""
        return next((i for i in self.items if i.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return {
            "unit": self.unit,
            "score": self.score,
            "rating": self.rating,
            "items": [attrs.asdict(i) for i in self.items],
        }


def parse_report(text: str, unit: str = "") -> SecurityReport:
    """Read the text of ``systemd-analyze security UNIT``.

    Raises :class:`ValueError` when the text has no overall exposure line.
    """
    items: list[SecurityItem] = []
    overall = None
    for line in text.splitlines():
        found = _OVERALL.search(line)
        if found:
            overall = found
            continue
        if not line.strip() or line.lstrip().startswith("NAME "):
            continue
        row = _ROW.match(line)
        if row is None:
            continue
        mark = row["mark"]
        ok = True if mark in _GOOD else False if mark in _BAD else None
        exposure = float(row["exposure"]) if row["exposure"] else None
        items.append(SecurityItem(row["name"], ok, row["description"], exposure))
    if overall is None:
        raise ValueError(f"no overall exposure level in the output: {text.strip()[-300:]!r}")
    return SecurityReport(
        overall["unit"] or unit, float(overall["score"]), overall["rating"], tuple(items), text
    )


def assess(unit: str, location: Any, *, timeout: float = TIMEOUT) -> SecurityReport:
    """The exposure score systemd gives ``unit``, a live unit of the manager at ``location``.

    Raises :class:`ManagerError` when ``systemd-analyze`` is missing, fails (an
    unknown unit) or prints no score.
    """
    options = tuple(getattr(location, "tool_options", ()))
    argv = [*location.tool_prefix, "systemd-analyze", *options, "security", "--no-pager", unit]
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ManagerError(f"cannot run systemd-analyze security for {unit}: {e}") from e
    try:
        return parse_report(done.stdout, unit)
    except ValueError:
        detail = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise ManagerError(f"systemd-analyze security could not assess {unit}: {detail}") from None
