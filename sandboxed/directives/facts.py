"""What a sandbox is built against: the one record of the host's facts (values, no I/O).

Every rule that depends on the host reads this record: the version rules of
:mod:`sandboxed.directives.host` (a directive newer than the manager, a value
systemd would quietly weaken on this cgroup layout, a stronger form it offers),
the enforcement rules of :mod:`sandboxed.directives.enforcement` (a build
feature, a cgroup2 hierarchy, an LSM a directive needs) and ``sandboxed
doctor``. It is gathered once per manager on the caller's side
(:mod:`sandboxed.runtime.facts`).

What is not known is said so, and each rule decides what an unknown means:
an unknown version (0) refuses nothing by version (a manager rejects what it
does not know), an unknown cgroup layout ("") refuses nothing by layout, and
unknown build features (none listed) meet no feature requirement (systemd
accepts such directives and then does nothing).
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["PROTECT_HOME_SEALS_ROOT", "UNKNOWN_HOST", "HostFacts"]

#: systemd 257 made ProtectHome=tmpfs's /root a read-only tmpfs of mode 0700.
PROTECT_HOME_SEALS_ROOT: Final = 257


@attrs.frozen
class HostFacts:
    """The service manager and machine a sandbox's unit will run on.

    ``version``: the manager's systemd version (0: unknown); ``cgroup_layout``:
    "unified", "hybrid" or "legacy" ("": unknown); ``features``: systemd's
    compile-time features as it lists them (``+BPF_FRAMEWORK``...; empty:
    unknown); ``lsms``: the kernel's active LSMs.
    """

    version: int = 0
    cgroup_layout: str = ""
    features: frozenset[str] = frozenset()
    lsms: frozenset[str] = frozenset()

    def has(self, version: int) -> bool:
        """True if this host's systemd is at least ``version`` (an unknown one is not)."""
        return self.version >= version > 0 or version == 0

    @property
    def seals_root(self) -> bool:
        """``ProtectHome=tmpfs`` makes ``/root`` 0700 here (systemd 257 and later)."""
        return self.version >= PROTECT_HOME_SEALS_ROOT


#: A host nothing is known of.
UNKNOWN_HOST: Final = HostFacts()
