"""What a user manager (``systemd --user``) can hold: the rootless form of a sandbox.

Pure: directives and a description of the user manager in, the directives it
gets (or the refusals) out. Measured with systemd 252 and read from
systemd.exec(5) and systemd.resource-control(5):

* file-system, network and other namespace directives are *accepted and
  silently ignored* by a user manager unless ``PrivateUsers=yes`` is set too;
  with it they hold. Every rootless sandbox gets ``PrivateUsers=yes``, and the
  caller's runtime directory (``/run/user/UID``: the user manager's sockets and
  the session bus) is made inaccessible — through it the code inside could ask
  the user manager for a unit of its own, without any sandbox;
* some are not available to user managers at all (``ProtectProc=``,
  ``ProcSubset=``, ``RemoveIPC=``, image options...);
* changing identity needs root (``User=``, ``Group=``, ``DynamicUser=``...);
* resource controls need their controller delegated to the user manager
  (pure cgroup2 hosts delegate cpu, memory and pids; cgroup v1 controllers are
  never delegated to unprivileged managers), and BPF-based ones need a
  privileged manager.

A directive the caller asked for that cannot hold is refused, naming it and
why. A preset's directive that has no rootless meaning is adapted, visibly: the
preset's rootless form (see docs/without-root.md) is recorded in the notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from sandboxed.directives.directive import Directive

#: systemd.exec(5): "only available for system services, or for services running in
#: per-user instances of the service manager when PrivateUsers= is enabled".
NEEDS_PRIVATE_USERS: frozenset[str] = frozenset(
    {
        "RootDirectory", "MountAPIVFS", "BindPaths", "BindReadOnlyPaths",
        "ExtensionDirectories", "CapabilityBoundingSet", "AmbientCapabilities",
        "ProtectSystem", "ProtectHome", "ReadWritePaths", "ReadOnlyPaths",
        "InaccessiblePaths", "ExecPaths", "NoExecPaths", "ReadWriteDirectories",
        "ReadOnlyDirectories", "InaccessibleDirectories", "TemporaryFileSystem",
        "PrivateTmp", "PrivateDevices", "PrivateNetwork", "NetworkNamespacePath",
        "PrivateIPC", "IPCNamespacePath", "ProtectHostname", "ProtectClock",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "PrivateMounts", "MountFlags",
    }
)  # fmt: skip

#: systemd.exec(5): "only available for system services and is not supported for
#: services running in per-user instances of the service manager".
NOT_IN_USER_MANAGERS: frozenset[str] = frozenset(
    {
        "RootImage", "RootImageOptions", "RootHash", "RootVerity", "MountImages",
        "ExtensionImages", "ProtectProc", "ProcSubset", "ProtectControlGroups",
        "RemoveIPC", "LogNamespace",
    }
)  # fmt: skip

#: Changing identity or raising privileges: a user manager runs as the user.
NEEDS_ROOT: frozenset[str] = frozenset(
    {"User", "Group", "DynamicUser", "SupplementaryGroups", "PAMName", "SELinuxContext",
     "AppArmorProfile", "SmackProcessLabel"}
)  # fmt: skip

#: Resource controls and the cgroup controller each needs.
CONTROLLER: Mapping[str, str] = {
    **dict.fromkeys(
        ("CPUWeight", "StartupCPUWeight", "CPUQuota", "CPUQuotaPeriodSec", "CPUShares",
         "StartupCPUShares"),
        "cpu",
    ),
    **dict.fromkeys(
        ("MemoryMin", "MemoryLow", "MemoryHigh", "MemoryMax", "MemorySwapMax",
         "DefaultMemoryMin", "DefaultMemoryLow", "MemoryLimit"),
        "memory",
    ),
    "TasksMax": "pids",
    **dict.fromkeys(
        ("IOWeight", "StartupIOWeight", "IODeviceWeight", "IOReadBandwidthMax",
         "IOWriteBandwidthMax", "IOReadIOPSMax", "IOWriteIOPSMax", "IODeviceLatencyTargetSec",
         "BlockIOWeight", "StartupBlockIOWeight", "BlockIODeviceWeight", "BlockIOReadBandwidth",
         "BlockIOWriteBandwidth"),
        "io",
    ),
    **dict.fromkeys(
        ("AllowedCPUs", "StartupAllowedCPUs", "AllowedMemoryNodes", "StartupAllowedMemoryNodes"),
        "cpuset",
    ),
}  # fmt: skip

#: cgroup BPF programs: attached by the system manager only.
NEEDS_BPF: frozenset[str] = frozenset(
    {"IPAddressAllow", "IPAddressDeny", "SocketBindAllow", "SocketBindDeny",
     "RestrictNetworkInterfaces", "IPIngressFilterPath", "IPEgressFilterPath", "BPFProgram",
     "DeviceAllow", "DevicePolicy", "RestrictFileSystems"}
)  # fmt: skip

#: Where a directive came from when the caller asked for it by name.
EXPLICIT_ORIGINS = frozenset({"keyword", "ns_options", "positional"})


@attrs.frozen
class UserManagerHost:
    """The user manager a rootless sandbox runs in, as the caller sees it.

    ``delegated``: the cgroup controllers delegated to it, or None when that could
    not be checked from here; ``why_not`` says why a controller is missing
    (``"hybrid cgroups: ..."``). ``runtime_dir``: the caller's ``/run/user/UID``;
    ``sockets``: other paths through which the user manager can be asked for
    units (a session bus outside the runtime directory).
    """

    uid: int
    user: str
    gid: int
    group: str
    delegated: frozenset[str] | None = None
    why_not: str = ""
    runtime_dir: str | None = None
    sockets: tuple[str, ...] = ()


@attrs.frozen
class Refusal:
    """A directive the user manager cannot hold: ``directive`` (name), ``value``
    (as written), ``reason`` and ``remedy``."""

    directive: str
    value: str
    reason: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.directive}={self.value}: {self.reason}"


@attrs.frozen
class RootlessForm:
    """The directives to send (by name), the notes on what changed and the refusals."""

    directives: tuple[Directive, ...]
    notes: tuple[str, ...]
    refused: tuple[Refusal, ...]


def _falsy(value: object) -> bool:
    """A value that asks for nothing (``DynamicUser=no``, ``ProtectProc=default``...)."""
    return value in (False, None, "", "no", "false", "default", "all", "auto", ()) or value == []


def refusal(name: str, value: str, host: UserManagerHost) -> Refusal | None:
    """Why the user manager of ``host`` cannot hold ``name=value``, or None if it can."""
    who = f"the user manager of uid {host.uid}"
    if name == "User" and value in (host.user, str(host.uid)):
        return None
    if name == "Group" and value in (host.group, str(host.gid)):
        return None
    if name in NEEDS_ROOT:
        return Refusal(
            name,
            value,
            f"needs root: {who} runs everything as {host.user}",
            "run as root (the system manager can change users)",
        )
    if name in NOT_IN_USER_MANAGERS:
        return Refusal(
            name,
            value,
            f"not available to user managers (systemd.exec(5)); {who} would ignore it",
            "run as root",
        )
    if name in NEEDS_BPF:
        return Refusal(
            name,
            value,
            f"needs cgroup BPF programs, which {who} cannot attach",
            "run as root (PrivateNetwork= and RestrictAddressFamilies= hold without root)",
        )
    controller = CONTROLLER.get(name)
    if controller is not None and (host.delegated is None or controller not in host.delegated):
        why = f" ({host.why_not})" if host.why_not else ""
        return Refusal(
            name,
            value,
            f"the {controller} controller is not delegated to {who}{why}",
            "run as root (on a pure cgroup2 host systemd delegates cpu, memory and pids to "
            "user@.service)",
        )
    return None


#: Preset directives with no rootless meaning, and what the preset keeps instead.
PRESET_ADAPTATIONS: Mapping[str, str] = {
    "DynamicUser": "runs as the caller's own uid, alone in a user namespace of its own",
    "RemoveIPC": "PrivateIPC= still gives it System V IPC and POSIX queues of its own",
    "ProtectProc": "the caller's other processes stay visible in /proc (docs/without-root.md)",
    "ProcSubset": "the rest of /proc stays visible, read-only",
    "IPAddressDeny": "PrivateNetwork= leaves it no network but a loopback of its own",
    "IPAddressAllow": "PrivateNetwork= leaves it no network but a loopback of its own",
}


def _written(d: Directive) -> str:
    return "; ".join(d.spec.render(d.value))


def _add(out: dict[str, Directive], d: Directive) -> None:
    out[d.name] = out[d.name].merge(d) if d.name in out else d


def rootless_form(
    directives: Sequence[Directive], origins: Mapping[str, str], host: UserManagerHost
) -> RootlessForm:
    """The rootless form of a sandbox's directives (see the module docstring).

    ``origins`` maps a directive's name to where it came from (a preset's name,
    ``"keyword"``...). Refusals are returned, not raised (the caller builds one
    error naming them all): one for each directive that the user manager cannot
    hold, unless it is a preset's hardening with a rootless form of its own
    (:data:`PRESET_ADAPTATIONS`), which is dropped with a note.
    """
    out: dict[str, Directive] = {}
    notes: list[str] = []
    refused: list[Refusal] = []
    private_network = any(d.name == "PrivateNetwork" and not _falsy(d.value) for d in directives)
    for d in directives:
        origin = origins.get(d.name, "")
        if d.name == "PrivateUsers":
            if _falsy(d.value):
                refused.append(
                    Refusal(
                        d.name,
                        _written(d),
                        "a user manager enforces namespace directives only with "
                        "PrivateUsers=yes, which every rootless sandbox gets",
                        "run as root",
                    )
                )
            continue
        if d.name == "ProtectControlGroups":
            continue  # not available to user managers: ReadOnlyPaths= below holds it for all
        if _falsy(d.value) and d.name in (NEEDS_ROOT | NOT_IN_USER_MANAGERS | NEEDS_BPF):
            continue  # asks for nothing a user manager lacks
        why = refusal(d.name, _written(d), host)
        if why is None:
            if d.name not in ("User", "Group"):  # the caller's own: who it runs as anyway
                _add(out, d)
            continue
        adapted = PRESET_ADAPTATIONS.get(d.name)
        if (
            adapted is not None
            and origin not in EXPLICIT_ORIGINS
            and (private_network or d.name not in ("IPAddressDeny", "IPAddressAllow"))
        ):
            notes.append(f"rootless: {d.name}={_written(d)} of {origin} dropped: {adapted}")
            continue
        refused.append(why)
    _add(out, Directive.of("PrivateUsers", True))
    # Without these, code in any rootless sandbox could leave it: through the user
    # manager's sockets (a unit of its own, with no sandbox) or by moving itself to
    # another of the user's cgroups (and outliving its unit). Both measured.
    hidden = [f"-{host.runtime_dir}"] if host.runtime_dir else []
    root = (host.runtime_dir or "").rstrip("/") + "/"
    hidden += [f"-{s}" for s in host.sockets if not (host.runtime_dir and s.startswith(root))]
    if hidden:
        _add(out, Directive.of("InaccessiblePaths", hidden))
    _add(out, Directive.of("ReadOnlyPaths", ["-/sys/fs/cgroup"]))
    notes.append(
        "rootless: PrivateUsers=yes added (a user manager holds namespace directives only "
        "in a user namespace), "
        + (f"InaccessiblePaths={' '.join(hidden)} (the user manager's sockets), " if hidden else "")
        + "ReadOnlyPaths=-/sys/fs/cgroup (the user's own cgroups)"
    )
    return RootlessForm(tuple(out[k] for k in sorted(out)), tuple(notes), tuple(refused))
