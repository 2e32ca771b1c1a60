"""Refuse, before any unit starts, a directive this host cannot enforce.

The facts come from the manager (its ``Features``: systemd's build options),
this machine's cgroup layout and its active LSMs, read once per process and
manager; the rules are :mod:`sandboxed.directives.enforcement`'s.
"""

from __future__ import annotations

import threading
from typing import Any

from sandboxed._errors import UnenforceableDirectiveError
from sandboxed.directives.enforcement import REQUIREMENTS, HostFacts, unenforceable
from sandboxed.runtime.client import manager_client
from sandboxed.systemd.cgroups import cgroup_mounts

_lock = threading.Lock()
_facts: dict[str, HostFacts] = {}


def host_facts(client: Any = None) -> HostFacts:
    """The facts about this host and its manager (cached per manager version)."""
    client = client or manager_client()
    key = str(getattr(client, "version", ""))
    with _lock:
        if key in _facts:
            return _facts[key]
    try:
        features = str(
            client.get_property(
                "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Features"
            )
        )
    except Exception:  # noqa: BLE001 - an unknown build: assume it has everything
        features = ""
    try:
        layout = cgroup_mounts()[0]
    except Exception:  # noqa: BLE001
        layout = "unified"
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsms = frozenset(f.read().strip().split(","))
    except OSError:
        lsms = frozenset()
    facts = HostFacts(frozenset(features.split()), layout, lsms)
    with _lock:
        _facts[key] = facts
    return facts


def refuse_unenforceable(options: Any) -> None:
    """Raise one :class:`UnenforceableDirectiveError` naming every directive of
    ``options`` this host cannot enforce that ``options.accept_unenforced`` does not cover."""
    accepted = getattr(options, "accept_unenforced", ())
    if accepted is True:
        return
    names = [d.name for d in options.directives if d.name in REQUIREMENTS]
    names = [n for n in names if n not in (accepted or ())]
    if not names:
        return  # the usual case: no bus call, no file read
    refused = unenforceable(names, host_facts())
    if refused:
        values = {d.name: "; ".join(d.spec.render(d.value)) for d in options.directives}
        listed = ", ".join(repr(n) for n, _ in refused)
        raise UnenforceableDirectiveError(
            "this host",
            [(name, values[name], reason) for name, reason in refused],
            f"accept the sandbox weaker than asked, explicitly: accept_unenforced=[{listed}] "
            "(or accept_unenforced=True for every such directive)",
        )
