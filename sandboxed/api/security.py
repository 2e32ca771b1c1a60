"""The exposure score of a sandbox: :func:`security_report`."""

from __future__ import annotations

from typing import Any

from sandboxed.systemd import locate
from sandboxed.systemd.security import TIMEOUT, SecurityReport, assess


def _unit_name(target: object) -> str:
    """The live unit name of a sandboxed function, a Sandbox, or a unit name itself.

    A sandbox whose unit is not running is started (that is what is assessed).
    """
    if isinstance(target, str):
        return target
    sandbox: Any = getattr(target, "sandbox", target)
    ensure = getattr(sandbox, "ensure_unit", None)
    if ensure is None:
        raise TypeError(
            f"cannot assess {target!r}; accepted: a sandboxed function, a Sandbox or a unit name"
        )
    unit = ensure()
    return str(unit.name)


def security_report(target: object, *, timeout: float = TIMEOUT) -> SecurityReport:
    """The exposure score systemd gives the unit of ``target``, a live sandbox.

    ``target`` is a sandboxed function (``fn``), its ``fn.sandbox``, or a unit
    name; a sandbox whose unit is not running yet is started first. Raises
    :class:`TypeError` for another kind of ``target`` and :class:`ManagerError`
    when ``systemd-analyze`` is missing, fails (an unknown unit) or prints no score.
    """
    return assess(_unit_name(target), locate.current(), timeout=timeout)
