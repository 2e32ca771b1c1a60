"""Which directives a host can enforce: the requirements, as values (no I/O).

systemd accepts some directives and then silently does nothing where the kernel
or its own build lacks what they need (seen here: ``SocketBindDeny=any`` and
``RestrictFileSystems=`` on a systemd built without BPF_FRAMEWORK). A sandbox
that asks for one of them is refused before any unit starts
(:mod:`sandboxed.runtime.enforcement` gathers the facts and raises), unless the
user accepts the directive unenforced with ``accept_unenforced=``.

One table, one rule each: this is the module to extend with a new kind of
requirement (a systemd version, the manager being a user manager) rather than
writing a second mechanism. ``sandboxed doctor`` reads the same table for its
remedies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

__all__ = ["REQUIREMENTS", "HostFacts", "Requirement", "unenforceable"]


@attrs.frozen
class HostFacts:
    """What the host offers: systemd's compile-time features (``+BPF_FRAMEWORK``...),
    the cgroup layout ("unified", "hybrid", "legacy") and the active LSMs."""

    features: frozenset[str] = frozenset()
    cgroup_layout: str = "unified"
    lsms: frozenset[str] = frozenset()


@attrs.frozen
class Requirement:
    """A need of a directive: ``met(facts)`` says whether the host fulfils it."""

    what: str  # the reason given when it is not met
    feature: str = ""  # a systemd build feature, e.g. "BPF_FRAMEWORK"
    cgroup2: bool = False  # a cgroup2 hierarchy (unified or hybrid)
    unified: bool = False  # the unified layout (cgroup2 only)
    lsm: str = ""  # an active LSM, e.g. "bpf"

    def met(self, facts: HostFacts) -> bool:
        if self.feature and f"+{self.feature}" not in facts.features:
            return False
        if self.unified and facts.cgroup_layout != "unified":
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
