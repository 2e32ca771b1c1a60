"""What the systemd in use can enforce, and refusing what it cannot (facts in, error out).

A sandbox is built against the host's :class:`~sandboxed.directives.facts.HostFacts`:
here, the version of the service manager that will start its unit and the
machine's cgroup layout. :func:`refuse` raises
:class:`~sandboxed.UnenforceableDirectiveError` (the one refusal of sandboxed,
shared with rootless mode) for every directive (or value) that this host would
not apply as asked — newer than the manager, or one that systemd would quietly
weaken here — so that no sandbox is ever started weaker than it was described.
The facts are gathered at the edge (:mod:`sandboxed.runtime.facts`); this module
stays pure.

To refuse something else the host cannot enforce, add a rule to
:data:`RULES`: a function of (directive, host) returning (reason, remedy), or
None when the host can.

:func:`stronger` goes the other way: where the host offers a stronger form of
what an option set asks for, it adds it (``PrivatePIDs=yes`` for a sandbox
that hides other processes, on systemd 257+) and says so in a note.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import attrs

from sandboxed._errors import UnenforceableDirectiveError
from sandboxed.directives.directive import Directive
from sandboxed.directives.facts import HostFacts

#: The layout a baseline setting is judged against when the host's could not be read:
#: what the baseline holds is never left to an unknown (see :func:`refuse`).
UNREAD_LAYOUT = "unknown"


def _private_cgroups_on_v1(d: Directive, host: HostFacts) -> tuple[str, str] | None:
    if d.name not in ("ProtectControlGroups", "ProtectControlGroupsEx"):
        return None
    if d.value not in ("private", "strict") or host.cgroup_layout in ("unified", ""):
        return None
    where = (
        "on a cgroup layout that could not be read, systemd may quietly turn it into no"
        if host.cgroup_layout == UNREAD_LAYOUT
        else f"on this {host.cgroup_layout} cgroup layout systemd quietly turns it into no"
    )
    return (
        f"{where} (a private cgroup mount needs a pure cgroup2 host)",
        "use ProtectControlGroups=yes (read-only cgroups), which holds everywhere",
    )


Rule = Callable[[Directive, HostFacts], "tuple[str, str] | None"]

#: Checks of what a host cannot enforce: each returns (reason, remedy), or None.
RULES: list[Rule] = [_private_cgroups_on_v1]


def refuse(
    directives: Iterable[Directive],
    host: HostFacts,
    accepted: Iterable[str] | bool = (),
    baseline: Collection[str] = (),
) -> None:
    """Raise UnenforceableDirectiveError naming every directive ``host`` cannot apply as asked.

    A directive newer than the manager's systemd says which version it needs
    (the error's ``needed`` and ``running``); a rule of :data:`RULES` says why,
    unless ``accepted`` (an option set's ``accept_unenforced=``) names the directive
    or is True. A manager does not accept what it does not know: versions always hold.
    So do the rules for a directive that takes the place of one of the containment
    baseline's (``baseline``: their names), which no option waives; for those an
    unread cgroup layout counts as one that may not hold them.
    """
    waived = accepted if isinstance(accepted, bool) else set(accepted or ())
    refused: list[tuple[str, str, str]] = []
    remedies: list[str] = []
    needed = 0
    for d in directives:
        value = "; ".join(d.spec.render(d.value))
        if host.version and d.needs > host.version:
            refused.append((d.name, value, f"needs systemd {d.needs} or newer"))
            remedies.append(f"run it where the manager is systemd {d.needs} or newer")
            needed = max(needed, d.needs)
            continue
        held = d.name in baseline
        if not held and (waived is True or (not isinstance(waived, bool) and d.name in waived)):
            continue
        judged = host
        if held and not host.cgroup_layout:
            judged = attrs.evolve(host, cgroup_layout=UNREAD_LAYOUT)
        for rule in RULES:
            found = rule(d, judged)
            if found is not None:
                refused.append((d.name, value, found[0]))
                remedies.append(found[1])
    if refused:
        raise UnenforceableDirectiveError(
            f"systemd {host.version}" if host.version else "this systemd",
            refused,
            remedies[0],
            needed=needed or None,
            running=host.version or None,
        )


@attrs.frozen
class Stronger:
    """Where ``when`` is set to ``value`` and the host has ``version``, also set ``add``."""

    when: str
    value: object
    add: str
    add_value: object
    version: int
    why: str


#: Stronger forms the host may offer of what an option set asks for.
STRONGER: tuple[Stronger, ...] = (
    Stronger(
        "ProtectProc",
        "invisible",
        "PrivatePIDs",
        True,
        257,
        "the sandbox's processes get a PID namespace of their own: /proc shows only "
        "them (no PID 1 of the manager, no other unit's processes)",
    ),
)


def stronger(directives: Iterable[Directive], host: HostFacts) -> tuple[list[Directive], list[str]]:
    """Directives to add where ``host`` offers a stronger form, and a note on each choice.

    A directive the option set already sets is never changed.
    """
    by_name = {d.name: d for d in directives}
    added: list[Directive] = []
    notes: list[str] = []
    for rule in STRONGER:
        asked = by_name.get(rule.when)
        if asked is None or asked.value != rule.value or rule.add in by_name:
            continue
        if host.version >= rule.version:
            added.append(Directive.of(rule.add, rule.add_value))
            notes.append(
                f"{rule.when}={rule.value} with {rule.add}=yes: systemd {host.version} has it "
                f"(257+), so {rule.why}"
            )
        else:
            running = f"systemd {host.version}" if host.version else "this systemd"
            notes.append(
                f"{rule.when}={rule.value} without {rule.add}=: {running} lacks it (needs "
                f"{rule.version}); other processes are hidden from /proc only as far as "
                f"{rule.when}= hides them"
            )
    return added, notes
