"""Which directives a host can enforce: the requirements, as values (no I/O).

systemd accepts some directives and then silently does nothing where the kernel
or its own build lacks what they need (seen here: ``SocketBindDeny=any`` and
``RestrictFileSystems=`` on a systemd built without BPF_FRAMEWORK). A sandbox
that asks for one of them is refused before any unit starts
(:func:`refuse_unenforceable`, from the host's
:class:`~sandboxed.directives.facts.HostFacts` that :mod:`sandboxed.runtime.facts`
gathers), unless the user accepts the directive unenforced with
``accept_unenforced=``.

One table, one rule each: this is the module to extend with a new kind of
requirement rather than writing a second mechanism. ``sandboxed doctor`` reads
the same table for its remedies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from sandboxed._errors import UnenforceableDirectiveError
from sandboxed.directives.facts import HostFacts

__all__ = ["REQUIREMENTS", "Requirement", "refuse_unenforceable", "unenforceable"]


@attrs.frozen
class Requirement:
    """A need of a directive: ``met(facts)`` says whether the host fulfils it."""

    what: str  # the reason given when it is not met
    feature: str = ""  # a systemd build feature, e.g. "BPF_FRAMEWORK"
    cgroup2: bool = False  # a cgroup2 hierarchy (unified or hybrid)
    unified: bool = False  # the unified layout (cgroup2 only)
    lsm: str = ""  # an active LSM, e.g. "bpf"

    def met(self, facts: HostFacts) -> bool:
        """Unknown build features meet no feature requirement; an unknown layout
        ("") meets the layout ones (as a layout that could not be read always has)."""
        if self.feature and f"+{self.feature}" not in facts.features:
            return False
        if self.unified and facts.cgroup_layout not in ("unified", ""):
            return False
        if self.cgroup2 and facts.cgroup_layout == "legacy":
            return False
        return not (self.lsm and self.lsm not in facts.lsms)


_BPF_FRAMEWORK: Final = Requirement(
    "systemd was built without BPF_FRAMEWORK (see `systemd --version`)", feature="BPF_FRAMEWORK"
)
_UNIFIED: Final = Requirement(
    "it needs BPF cgroup programs on the unified (pure cgroup2) hierarchy", unified=True
)
_CGROUP2: Final = Requirement("it needs a cgroup2 hierarchy for its BPF programs", cgroup2=True)
_BPF_LSM: Final = Requirement("the kernel does not run the BPF LSM (lsm=...,bpf)", lsm="bpf")

#: Directive -> what it needs; every requirement must be met.
REQUIREMENTS: Final[dict[str, tuple[Requirement, ...]]] = {
    "SocketBindAllow": (_BPF_FRAMEWORK, _UNIFIED),
    "SocketBindDeny": (_BPF_FRAMEWORK, _UNIFIED),
    "RestrictNetworkInterfaces": (_BPF_FRAMEWORK, _UNIFIED),
    "RestrictFileSystems": (_BPF_FRAMEWORK, _BPF_LSM),
    "IPAddressAllow": (_CGROUP2,),
    "IPAddressDeny": (_CGROUP2,),
    "IPIngressFilterPath": (_CGROUP2,),
    "IPEgressFilterPath": (_CGROUP2,),
}


def unenforceable(names: Iterable[str], facts: HostFacts) -> list[tuple[str, str]]:
    """``(directive, reason)`` for each of ``names`` that ``facts`` cannot enforce."""
    out = []
    for name in names:
        unmet = [r.what for r in REQUIREMENTS.get(name, ()) if not r.met(facts)]
        if unmet:
            out.append((name, "; ".join(unmet)))
    return out


def refuse_unenforceable(
    directives: Iterable[Any], facts: HostFacts, accepted: Iterable[str] | bool = ()
) -> None:
    """Raise one :class:`UnenforceableDirectiveError` naming every directive of
    ``directives`` that ``facts`` cannot enforce and ``accepted`` (an option set's
    ``accept_unenforced=``: names, or True for all) does not cover."""
    if accepted is True:
        return
    waived = set(accepted or ()) if not isinstance(accepted, bool) else set()
    directives = list(directives)
    names = [d.name for d in directives if d.name in REQUIREMENTS and d.name not in waived]
    if not names:
        return
    refused = unenforceable(names, facts)
    if refused:
        values = {d.name: "; ".join(d.spec.render(d.value)) for d in directives}
        listed = ", ".join(repr(n) for n, _ in refused)
        raise UnenforceableDirectiveError(
            "this host",
            [(name, values[name], reason) for name, reason in refused],
            f"accept the sandbox weaker than asked, explicitly: accept_unenforced=[{listed}] "
            "(or accept_unenforced=True for every such directive)",
        )
