"""The directive table: every directive a transient service accepts on systemd 252.

One row per directive: ``(unit-file name, kind, bus property name or "" when
it is the same, example value in systemd's spelling, note)``, grouped by the
man page that documents it. The kinds (in :mod:`sandboxed._kinds`) follow
the branches of ``bus_append_cgroup_property()``,
``bus_append_execute_property()``, ``bus_append_kill_property()`` and
``bus_append_service_property()`` in systemd 252's
``src/shared/bus-unit-util.c``.
"""

from __future__ import annotations

from sandboxed._kinds import (
    ABSPATH,
    BOOL,
    CPU_QUOTA,
    ENVIRONMENT,
    MEMORY,
    MODE,
    NONEMPTY,
    TASKS,
    TIMESPAN,
    Kind,
    enum,
    filter_list,
    mask_set,
    paths,
    strv,
)
from sandboxed._specials import (
    BIND_PATHS,
    CAPABILITIES,
    IP_ADDRESSES,
    RLIMITS,
    SIGNAL,
    TEMPORARY_FS,
    USER,
    WORKING_DIRECTORY,
)

Row = tuple[str, Kind, str, str, str]

_EXEC: list[Row] = [
    ("User", USER, "", "nobody", "user name or UID the service runs as"),
    ("Group", USER, "", "nogroup", "group name or GID"),
    ("DynamicUser", BOOL, "", "yes", ""),
    ("WorkingDirectory", WORKING_DIRECTORY, "", "/tmp", ""),
    ("UMask", MODE, "", "0077", ""),
    ("Environment", ENVIRONMENT, "", "A=1 B=2", ""),
    ("PrivateNetwork", BOOL, "", "yes", ""),
    ("PrivateTmp", BOOL, "", "yes", ""),
    ("PrivateDevices", BOOL, "", "yes", ""),
    ("PrivateUsers", BOOL, "", "yes", ""),
    (
        "ProtectSystem",
        enum(("yes", "no", "full", "strict"), booleans=("yes", "no")),
        "",
        "strict",
        "",
    ),
    (
        "ProtectHome",
        enum(("yes", "no", "read-only", "tmpfs"), booleans=("yes", "no")),
        "",
        "read-only",
        "",
    ),
    ("ProtectProc", enum(("noaccess", "invisible", "ptraceable", "default")), "", "invisible", ""),
    ("ProcSubset", enum(("all", "pid")), "", "pid", ""),
    ("ReadOnlyPaths", paths(), "", "/usr -/opt", ""),
    ("ReadWritePaths", paths(), "", "/var/tmp -/var/lib/x", ""),
    ("InaccessiblePaths", paths(), "", "/root -/srv", ""),
    ("BindPaths", BIND_PATHS, "", "/var/tmp:/mnt", ""),
    ("BindReadOnlyPaths", BIND_PATHS, "", "-/etc/hosts", ""),
    ("TemporaryFileSystem", TEMPORARY_FS, "", "/run:size=10M", ""),
    ("NoNewPrivileges", BOOL, "", "yes", ""),
    (
        "SystemCallFilter",
        filter_list(r"@?[a-z0-9_-]+(:[A-Za-z0-9_]+)?", "system call names and @groups"),
        "",
        "~@mount @clock",
        "",
    ),
    ("SystemCallArchitectures", strv(item=r"[a-z0-9_-]+", what="architectures"), "", "native", ""),
    ("CapabilityBoundingSet", CAPABILITIES, "", "~CAP_SYS_ADMIN CAP_NET_RAW", ""),
    ("AmbientCapabilities", CAPABILITIES, "", "CAP_NET_BIND_SERVICE", ""),
    (
        "RestrictAddressFamilies",
        filter_list(r"AF_[A-Z0-9_]+|none", "address families"),
        "",
        "AF_UNIX AF_INET",
        "",
    ),
    (
        "RestrictNamespaces",
        mask_set(
            {
                "cgroup": 0x02000000,
                "ipc": 0x08000000,
                "net": 0x40000000,
                "mnt": 0x00020000,
                "pid": 0x20000000,
                "user": 0x10000000,
                "uts": 0x04000000,
                "time": 0x00000080,
            },
            0x7E020000,
            "namespace type",
            lower=False,
            booleans=True,
        ),
        "",
        "~user net",
        "",
    ),
    ("ProtectKernelTunables", BOOL, "", "yes", ""),
    ("ProtectKernelModules", BOOL, "", "yes", ""),
    ("ProtectKernelLogs", BOOL, "", "yes", ""),
    ("ProtectControlGroups", BOOL, "", "yes", ""),
    ("ProtectClock", BOOL, "", "yes", ""),
    ("ProtectHostname", BOOL, "", "yes", ""),
    ("LockPersonality", BOOL, "", "yes", ""),
    ("MemoryDenyWriteExecute", BOOL, "", "yes", ""),
    ("RestrictRealtime", BOOL, "", "yes", ""),
    ("RestrictSUIDSGID", BOOL, "", "yes", ""),
    ("RootDirectory", ABSPATH, "", "/srv/root", ""),
    ("PAMName", NONEMPTY, "", "login", ""),
]

_RESOURCE: list[Row] = [
    ("CPUQuota", CPU_QUOTA, "CPUQuotaPerSecUSec", "20%", "a float is a number of CPUs: 0.2 is 20%"),
    ("MemoryMax", MEMORY, "", "512M", ""),
    ("MemoryHigh", MEMORY, "", "400M", ""),
    ("MemorySwapMax", MEMORY, "", "0", ""),
    ("TasksMax", TASKS, "", "64", ""),
    ("IPAddressDeny", IP_ADDRESSES, "", "any", ""),
    ("IPAddressAllow", IP_ADDRESSES, "", "localhost 10.0.0.0/8", ""),
]

_KILL: list[Row] = [
    ("KillMode", enum(("control-group", "mixed", "process", "none")), "", "mixed", ""),
    ("KillSignal", SIGNAL, "", "SIGTERM", ""),
]

_SERVICE: list[Row] = [
    ("TimeoutStopSec", TIMESPAN, "TimeoutStopUSec", "10s", ""),
    ("RuntimeMaxSec", TIMESPAN, "RuntimeMaxUSec", "5min 3s", ""),
]

TABLE: dict[str, list[Row]] = {
    "systemd.exec(5)": _EXEC + RLIMITS,
    "systemd.resource-control(5)": _RESOURCE,
    "systemd.kill(5)": _KILL,
    "systemd.service(5)": _SERVICE,
}

#: Directives systemd accepts for a transient service but sandboxed refuses:
#: name → (man page, kind, why).
RESERVED: dict[str, tuple[str, Kind, str]] = {}
