"""Finding the service manager to start units with.

Order (first that applies wins):

1. an address passed by the caller (``sandboxed.configure(manager=...)``);
2. the ``SANDBOXED_MANAGER`` environment variable (a D-Bus address such as
   ``unix:path=/run/dbus/system_bus_socket``, or a socket path);
3. for a caller that is not root, its own user manager (``systemd --user``)
   over its session bus: ``DBUS_SESSION_BUS_ADDRESS``, else
   ``$XDG_RUNTIME_DIR/bus``, else ``/run/user/UID/bus`` — never the system
   manager (which refuses it without polkit) nor the embedded one (root only);
4. the host's systemd when PID 1 is systemd: its private socket
   ``/run/systemd/private`` as root, the system bus otherwise;
5. the embedded manager (:mod:`sandboxed.embedded`): a running one is reused,
   otherwise it is started — unless ``SANDBOXED_EMBEDDED=0``, or unless the one
   this process was using was stopped on purpose (``sandboxed embedded stop``):
   a caller never boots again a manager someone stopped under it.

Whether a manager is a user manager is asked of the manager itself
(``ManagerClient.manager_uid``), whichever way it was found.
"""

from __future__ import annotations

import os
import threading

import attrs

from sandboxed._errors import ManagerNotFoundError

ENV_ADDRESS = "SANDBOXED_MANAGER"
ENV_EMBEDDED = "SANDBOXED_EMBEDDED"


@attrs.frozen
class ManagerLocation:
    """Where a manager is and how it was found.

    ``kind`` is ``"explicit"``, ``"environment"``, ``"user"`` (the caller's own user
    manager), ``"host"`` or ``"embedded"``.
    ``tool_prefix`` runs systemd's own tools (systemctl, systemd-run) against it, with
    ``tool_options`` after the tool's name (``--user`` for a user manager).
    ``cgroup_root`` maps the manager's cgroup paths to host paths (hierarchy name -> dir).
    """

    address: str
    kind: str
    tool_prefix: tuple[str, ...] = ()
    cgroup_roots: tuple[tuple[str, str], ...] = ()
    layout: str = ""
    tool_options: tuple[str, ...] = ()

    def cgroup_dir(self, hierarchy: str, control_group: str) -> str | None:
        """Host path of a unit's ``ControlGroup`` in ``hierarchy`` (``unified``, ``memory``...)."""
        for name, root in self.cgroup_roots:
            if name == hierarchy:
                return os.path.normpath(root + "/" + control_group.lstrip("/"))
        return None


def host_systemd_running() -> bool:
    """True when PID 1 of this PID namespace is systemd (sd_booted semantics)."""
    return os.path.isdir("/run/systemd/system")


def _host_cgroup_roots() -> tuple[tuple[str, str], ...]:
    from sandboxed.systemd.cgroups import cgroup_mounts

    try:
        _layout, mounts = cgroup_mounts()
    except Exception:
        return ()
    roots = []
    for m in mounts:
        name = "unified" if m.type == "cgroup2" else m.name
        roots.append((name, "/sys/fs/cgroup/" + m.name if m.name else "/sys/fs/cgroup"))
    return tuple(roots)


_attached: tuple[str, str] | None = None  # (state directory, instance) of the embedded one used


def locate(address: str | None = None, start_embedded: bool | None = None) -> ManagerLocation:
    """Find (or start) the manager; see the module docstring for the order.

    ``start_embedded=False`` never boots one (read-only commands): with no
    manager running it raises :class:`ManagerNotFoundError`.
    """
    global _attached
    if address:
        return ManagerLocation(_normalise(address), "explicit")
    env = os.environ.get(ENV_ADDRESS)
    if env:
        return ManagerLocation(_normalise(env), "environment")
    if os.geteuid() != 0:
        return ManagerLocation(
            user_bus_address(), "user", (), _host_cgroup_roots(), tool_options=("--user",)
        )
    if host_systemd_running():
        if os.geteuid() == 0 and os.path.exists("/run/systemd/private"):
            addr = "unix:path=/run/systemd/private"
        else:
            addr = os.environ.get(
                "DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket"
            )
        return ManagerLocation(addr, "host", (), _host_cgroup_roots())
    from sandboxed.systemd import embedded

    m = embedded.status()
    if (
        m is None
        and _attached is not None
        and _attached[0] == str(embedded.state_dir())
        and embedded.stopped_on_purpose(embedded.state_dir(), _attached[1])
    ):
        raise ManagerNotFoundError(
            f"the embedded manager at {_attached[0]} that this process used was stopped "
            "on purpose (`sandboxed embedded stop`), so it is not started again behind "
            "the back of whoever stopped it; start one with `sandboxed embedded start`"
        )
    if m is None:
        turned_off = os.environ.get(ENV_EMBEDDED, "1").lower() in ("0", "no", "false")
        if start_embedded is None:
            start_embedded = not turned_off
        if not start_embedded:
            why = (
                f"starting the embedded manager is turned off ({ENV_EMBEDDED}=0)"
                if turned_off
                else "no embedded manager is running"
            )
            raise ManagerNotFoundError(
                "no systemd service manager found: PID 1 is not systemd, "
                f"{ENV_ADDRESS} is not set and {why}; start it with "
                f"`python -m sandboxed embedded start`, or set {ENV_ADDRESS} to a "
                "manager's D-Bus address"
            )
        m = embedded.start()
    _attached = (str(m.directory), m.instance)
    return embedded_location(m)


def user_bus_address() -> str:
    """The D-Bus address of the caller's session bus, where its user manager is.

    Raises :class:`ManagerNotFoundError` (one line, with a remedy) when there is none.
    """
    from sandboxed.systemd.bus import is_socket_alive

    env = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if env:
        return env
    uid = os.geteuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(runtime or f"/run/user/{uid}", "bus")
    if is_socket_alive(path):
        return f"unix:path={path}"
    where = f"nothing listens at {path}" + ("" if runtime else " (XDG_RUNTIME_DIR is not set)")
    pid1 = (
        "the system manager starts units only for root"
        if host_systemd_running()
        else "PID 1 is not systemd and the embedded manager needs root"
    )
    raise ManagerNotFoundError(
        f"no user manager for uid {uid}: {where}, and without root no other manager will "
        f"do ({pid1}); log in through a systemd session (or `loginctl enable-linger`), "
        f"run as root, or set {ENV_ADDRESS} to a manager's D-Bus address"
    )


def embedded_location(m: object) -> ManagerLocation:
    from sandboxed.systemd.embedded import EmbeddedManager

    assert isinstance(m, EmbeddedManager)
    roots = []
    for d in m.cgroup_dirs:
        rel = d[len("/sys/fs/cgroup/") :]
        name = "unified" if m.layout == "unified" else rel.split("/", 1)[0]
        roots.append((name, d))
    return ManagerLocation(m.address, "embedded", tuple(m.tool_prefix), tuple(roots), m.layout)


def _normalise(address: str) -> str:
    if address.startswith("/"):
        return f"unix:path={address}"
    return address


_lock = threading.Lock()
_location: ManagerLocation | None = None
_explicit: str | None = None


def configure(manager: str | None = None) -> None:
    """Use the manager at ``manager`` (a D-Bus address or socket path) from now on."""
    global _explicit, _location
    with _lock:
        _explicit = manager
        _location = None


def current(start_embedded: bool | None = None) -> ManagerLocation:
    """The manager this process uses (found once, then cached).

    ``start_embedded=False``: never boot the embedded manager to find one.
    """
    global _location
    with _lock:
        if _location is None:
            _location = locate(_explicit, start_embedded)
        return _location


def forget() -> None:
    """Forget the cached location (after a fork, or when the manager went away)."""
    global _location
    _location = None
