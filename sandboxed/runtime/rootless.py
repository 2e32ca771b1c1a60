"""Rootless mode, the caller's side: what the user manager in use can hold on this host.

The rules are pure (:mod:`sandboxed.directives.rootless`); this module asks the
manager who it runs as, where its runtime directory and its cgroup are, and
which cgroup controllers that cgroup holds, then builds the sandbox's rootless
form or the error that refuses it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import threading
from typing import Any

import attrs

from sandboxed._errors import SandboxError, UnenforceableDirectiveError
from sandboxed.directives.rootless import UserManagerHost, rootless_form

_lock = threading.Lock()
_hosts: dict[tuple[str, int], UserManagerHost | None] = {}


def _names(uid: int) -> tuple[str, int, str]:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        gid = os.getgid() if os.getuid() == uid else uid
        return str(uid), gid, str(gid)
    try:
        group = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        group = str(pw.pw_gid)
    return pw.pw_name, pw.pw_gid, group


def user_manager_host(client: Any) -> UserManagerHost | None:
    """The user manager behind ``client`` as seen from here, or None for a system manager.

    Asked once per manager connection address and uid (cached for the process).
    """
    uid = int(client.manager_uid)
    if uid == 0:
        return None
    key = (str(client.address), uid)
    with _lock:
        if key in _hosts:
            return _hosts[key]
    from sandboxed.systemd.bus import parse_address
    from sandboxed.systemd.cgroups import cgroup_mounts, delegated_controllers

    env = [str(e) for e in client.manager_property("Environment") or ()]
    runtime = next((e.split("=", 1)[1] for e in env if e.startswith("XDG_RUNTIME_DIR=")), "")
    control_group = str(client.manager_property("ControlGroup") or "")
    delegated: frozenset[str] | None
    try:
        layout, mounts = cgroup_mounts()
        delegated, why = delegated_controllers(control_group, uid, layout, mounts)
    except Exception as e:  # noqa: BLE001 - an unknown layout is "cannot check", refused
        delegated, why = None, f"cannot read this host's cgroup layout: {str(e).splitlines()[0]}"
    if not control_group:
        delegated, why = None, "the user manager does not say which cgroup it runs in"
    user, gid, group = _names(uid)
    sockets = []
    for entry in env:
        if entry.startswith("DBUS_SESSION_BUS_ADDRESS="):
            with contextlib.suppress(SandboxError):
                path = parse_address(entry.split("=", 1)[1])
                if path.startswith("/"):
                    sockets.append(path)
    host = UserManagerHost(
        uid, user, gid, group, delegated, why, runtime or f"/run/user/{uid}", tuple(sockets)
    )
    with _lock:
        _hosts[key] = host
    return host


def forget() -> None:
    """Forget what was learnt of the user managers (after a fork, or a new manager)."""
    with _lock:
        _hosts.clear()


def rootless_options(options: Any, host: UserManagerHost) -> tuple[Any, tuple[str, ...]]:
    """``options`` in their rootless form, and the notes on what changed.

    Raises :class:`UnenforceableDirectiveError` naming every directive the user
    manager cannot hold (before any unit exists).
    """
    form = rootless_form(options.directives, dict(options.origins), host)
    if form.refused:
        raise UnenforceableDirectiveError(
            f"the user manager of uid {host.uid} (rootless mode)",
            [(r.directive, r.value, r.reason) for r in form.refused],
            form.refused[0].remedy,
        )
    return attrs.evolve(options, directives=form.directives), form.notes


def caller_identity(host: UserManagerHost) -> tuple[int, frozenset[int]]:
    """The uid and groups a rootless unit runs with (the user manager's: the caller's)."""
    gids = {host.gid}
    if os.getuid() == host.uid:
        gids.update(os.getgroups())
    return host.uid, frozenset(gids)
