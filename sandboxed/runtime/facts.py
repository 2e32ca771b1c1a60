"""The host's facts, gathered in one place: what every sandbox is built against.

The manager's version and build features (asked of it), this machine's cgroup
layout and its active LSMs (read from here) make one
:class:`~sandboxed.directives.facts.HostFacts`, which the version rules, the
enforcement rules and ``sandboxed doctor`` all read. Gathered once per manager:
keyed by the manager's address and the version it reports when asked, so a
different manager, or the same one re-executed into another version, is
learnt anew, while the usual build of a sandbox costs one property read.
"""

from __future__ import annotations

import threading
from typing import Any

from sandboxed._errors import ManagerError
from sandboxed.directives.facts import HostFacts
from sandboxed.runtime.client import manager_client

_lock = threading.Lock()
_facts: dict[tuple[str, str], HostFacts] = {}


def _version(client: Any) -> str:
    try:
        return str(client.manager_property("Version"))
    except ManagerError:
        raise  # unreachable, reloading: the caller retries or says so
    except Exception:  # noqa: BLE001 - a manager that will not say: its own checks remain
        return ""


def _number(version: str) -> int:
    digits = ""
    for ch in version:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits or 0)


def _gather(client: Any, version: str) -> HostFacts:
    from sandboxed.systemd.cgroups import cgroup_mounts

    try:
        features = str(client.manager_property("Features"))
    except ManagerError:
        raise
    except Exception:  # noqa: BLE001 - an unknown build meets no feature requirement
        features = ""
    try:
        layout = cgroup_mounts()[0]
    except Exception:  # noqa: BLE001 - an unknown layout refuses nothing by layout
        layout = ""
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsms = frozenset(f.read().strip().split(","))
    except OSError:
        lsms = frozenset()
    return HostFacts(_number(version), layout, frozenset(features.split()), lsms)


def host_facts(client: Any = None) -> HostFacts:
    """The facts of this host and of the manager behind ``client`` (the process's
    shared connection by default). Raises :class:`~sandboxed.ManagerError` when
    the manager does not answer."""
    client = client or manager_client()
    version = _version(client)
    key = (str(client.address), version)
    with _lock:
        if key in _facts:
            return _facts[key]
    facts = _gather(client, version)
    with _lock:
        return _facts.setdefault(key, facts)


def forget() -> None:
    """Forget every manager's facts (the next sandbox learns them anew)."""
    with _lock:
        _facts.clear()
