"""The directive table: every directive a transient service accepts, from systemd 252 on.

One row per directive: ``(unit-file name, kind, bus property name or "" when
it is the same, example value in systemd's spelling, note)``, grouped by the
man page that documents it. The kinds (in :mod:`sandboxed.directives.kinds`) follow
the branches of ``bus_append_cgroup_property()``,
``bus_append_execute_property()``, ``bus_append_kill_property()`` and
``bus_append_service_property()`` in systemd 252's
``src/shared/bus-unit-util.c``; rows for what later versions added (253 to 258)
follow their ``bus-unit-util.c`` and are listed in :data:`SINCE` with the
version that introduced them (value syntaxes that came later know their own
version: see ``since`` in :mod:`sandboxed.directives.kinds`).
"""

from __future__ import annotations

from sandboxed.directives.exec_kinds import (
    COREDUMP_FILTER,
    CPU_AFFINITY,
    ENVIRONMENT_FILES,
    EXEC_DIRECTORY,
    EXIT_STATUS,
    EXTENSION_IMAGES,
    IO_CLASS,
    LABEL,
    LOAD_CREDENTIAL,
    LOG_EXTRA_FIELDS,
    LOG_LEVEL,
    MOUNT_FLAGS,
    MOUNT_IMAGES,
    NUMA_MASK,
    NUMA_POLICY,
    ROOT_HASH,
    ROOT_HASH_SIGNATURE,
    ROOT_IMAGE_OPTIONS,
    SCHED_POLICY,
    SECURE_BITS,
    SET_CREDENTIAL,
    SET_CREDENTIAL_ENCRYPTED,
    SYSCALL_ERRNO,
    SYSLOG_FACILITY,
)
from sandboxed.directives.kinds import (
    ABSPATH,
    BOOL,
    CPU_QUOTA,
    ENVIRONMENT,
    MEMORY,
    MODE,
    NONEMPTY,
    NSEC,
    PERCENT_SCALE,
    STRING,
    TASKS,
    TIMEOUT_BOTH,
    TIMESPAN,
    Kind,
    enum,
    ex_enum,
    filter_list,
    integer,
    mask_set,
    paths,
    string,
    strv,
    timespan,
)
from sandboxed.directives.resource_kinds import (
    BPF_PATHS,
    BPF_PROGRAM,
    CONTROLLERS,
    CPU_SET,
    CPU_WEIGHT,
    DELEGATE,
    DEVICE_ALLOW,
    IO_DEVICE_WEIGHT,
    IO_LATENCY,
    IO_LIMIT,
    SOCKET_BIND,
)
from sandboxed.directives.specials import (
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

_U32 = 2**32 - 1
_PROTECT_SYSTEM = enum(("yes", "no", "full", "strict"), booleans=("yes", "no"))
_PROTECT_HOME = enum(("yes", "no", "read-only", "tmpfs"), booleans=("yes", "no"))
_NAMESPACES = mask_set(
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
)
_SYSCALL = r"@?[a-z0-9_-]+(:[A-Za-z0-9_]+)?"
_NAME = r"[A-Za-z0-9_.@-]+"
_RELATIVE = r"[^/\s][^\s]*"
_OOM = enum(("auto", "kill"))

_EXEC: list[Row] = [
    # Credentials and identity
    ("User", USER, "", "nobody", "user name or UID the service runs as"),
    ("Group", USER, "", "nogroup", "group name or GID"),
    ("DynamicUser", BOOL, "", "yes", ""),
    ("SupplementaryGroups", strv(item=_NAME, what="group names or GIDs"), "", "adm", ""),
    ("PAMName", NONEMPTY, "", "login", ""),
    # Paths
    ("WorkingDirectory", WORKING_DIRECTORY, "", "/tmp", ""),
    ("RootDirectory", ABSPATH, "", "/srv/root", ""),
    ("RootImage", ABSPATH, "", "/srv/image.raw", ""),
    ("RootImageOptions", ROOT_IMAGE_OPTIONS, "", "root:ro,noexec", ""),
    ("RootHash", ROOT_HASH, "", "/srv/image.roothash", "hex hash → RootHash, path → RootHashPath"),
    (
        "RootHashSignature",
        ROOT_HASH_SIGNATURE,
        "",
        "/srv/image.roothash.p7s",
        "base64:... → RootHashSignature, path → RootHashSignaturePath",
    ),
    ("RootVerity", ABSPATH, "", "/srv/image.verity", ""),
    ("MountAPIVFS", BOOL, "", "yes", ""),
    ("ProtectProc", enum(("noaccess", "invisible", "ptraceable", "default")), "", "invisible", ""),
    ("ProcSubset", enum(("all", "pid")), "", "pid", ""),
    ("BindPaths", BIND_PATHS, "", "/var/tmp:/mnt", ""),
    ("BindReadOnlyPaths", BIND_PATHS, "", "-/etc/hosts", ""),
    ("MountImages", MOUNT_IMAGES, "", "/srv/a.raw:/mnt/a", ""),
    ("ExtensionImages", EXTENSION_IMAGES, "", "-/srv/ext.raw", ""),
    ("ExtensionDirectories", paths("-"), "", "-/srv/ext", ""),
    # User/group identity
    # Capabilities
    ("CapabilityBoundingSet", CAPABILITIES, "", "~CAP_SYS_ADMIN CAP_NET_RAW", ""),
    ("AmbientCapabilities", CAPABILITIES, "", "CAP_NET_BIND_SERVICE", ""),
    # Security
    ("NoNewPrivileges", BOOL, "", "yes", ""),
    ("SecureBits", SECURE_BITS, "", "keep-caps noroot", ""),
    # Mandatory access control
    ("SELinuxContext", STRING, "", "-system_u:system_r:init_t:s0", ""),
    ("AppArmorProfile", LABEL, "", "-unconfined", ""),
    ("SmackProcessLabel", LABEL, "", "-label", ""),
    # Process properties (LimitXXX= are appended below)
    ("UMask", MODE, "", "0077", ""),
    ("CoredumpFilter", COREDUMP_FILTER, "", "default private-dax", ""),
    ("KeyringMode", enum(("inherit", "private", "shared")), "", "private", ""),
    ("OOMScoreAdjust", integer("i", -1000, 1000), "", "500", ""),
    ("TimerSlackNSec", NSEC, "", "50us", ""),
    (
        "Personality",
        string("an architecture such as x86-64 or x86", r"[a-z0-9_-]+"),
        "",
        "x86-64",
        "",
    ),
    ("IgnoreSIGPIPE", BOOL, "", "no", ""),
    # Scheduling
    ("Nice", integer("i", -20, 19), "", "10", ""),
    ("CPUSchedulingPolicy", SCHED_POLICY, "", "batch", ""),
    ("CPUSchedulingPriority", integer("i", 0, 99), "", "0", ""),
    ("CPUSchedulingResetOnFork", BOOL, "", "yes", ""),
    ("CPUAffinity", CPU_AFFINITY, "", "0-1", "'numa' sets CPUAffinityFromNUMA"),
    ("NUMAPolicy", NUMA_POLICY, "", "interleave", ""),
    ("NUMAMask", NUMA_MASK, "", "0", ""),
    ("IOSchedulingClass", IO_CLASS, "", "idle", ""),
    ("IOSchedulingPriority", integer("i", 0, 7), "", "7", ""),
    # Sandboxing
    ("ProtectSystem", _PROTECT_SYSTEM, "", "strict", ""),
    ("ProtectHome", _PROTECT_HOME, "", "read-only", ""),
    ("RuntimeDirectory", EXEC_DIRECTORY, "", "app", "NAME:LINK sets RuntimeDirectorySymlink"),
    ("StateDirectory", EXEC_DIRECTORY, "", "app", "NAME:LINK sets StateDirectorySymlink"),
    ("CacheDirectory", EXEC_DIRECTORY, "", "app", "NAME:LINK sets CacheDirectorySymlink"),
    ("LogsDirectory", EXEC_DIRECTORY, "", "app", "NAME:LINK sets LogsDirectorySymlink"),
    (
        "ConfigurationDirectory",
        strv(item=_RELATIVE, what="relative directory names"),
        "",
        "app",
        "",
    ),
    ("RuntimeDirectoryMode", MODE, "", "0750", ""),
    ("StateDirectoryMode", MODE, "", "0750", ""),
    ("CacheDirectoryMode", MODE, "", "0750", ""),
    ("LogsDirectoryMode", MODE, "", "0750", ""),
    ("ConfigurationDirectoryMode", MODE, "", "0750", ""),
    (
        "RuntimeDirectoryPreserve",
        enum(("no", "yes", "restart"), booleans=("yes", "no")),
        "",
        "restart",
        "",
    ),
    ("ReadWritePaths", paths(), "", "/var/tmp -/var/lib/x", ""),
    ("ReadOnlyPaths", paths(), "", "/usr -/opt", ""),
    ("InaccessiblePaths", paths(), "", "/root -/srv", ""),
    ("ExecPaths", paths(), "", "/usr/bin", ""),
    ("NoExecPaths", paths(), "", "/home -/srv", ""),
    ("ReadWriteDirectories", paths(), "", "/var/tmp", "deprecated spelling of ReadWritePaths="),
    ("ReadOnlyDirectories", paths(), "", "/usr", "deprecated spelling of ReadOnlyPaths="),
    ("InaccessibleDirectories", paths(), "", "/root", "deprecated spelling of InaccessiblePaths="),
    ("TemporaryFileSystem", TEMPORARY_FS, "", "/run:size=10M", ""),
    ("PrivateTmp", ex_enum({"disconnected": 257}), "", "yes", ""),
    (
        "PrivateTmpEx",
        enum(("disconnected",), booleans=("yes", "no")),
        "",
        "disconnected",
        "the string form of PrivateTmp=",
    ),
    ("PrivateDevices", BOOL, "", "yes", ""),
    ("PrivateNetwork", BOOL, "", "yes", ""),
    ("NetworkNamespacePath", ABSPATH, "", "/run/netns/box", ""),
    ("PrivateIPC", BOOL, "", "yes", ""),
    ("IPCNamespacePath", ABSPATH, "", "/run/ipcns/box", ""),
    ("PrivateUsers", ex_enum({"identity": 257, "full": 258}), "", "yes", ""),
    (
        "PrivateUsersEx",
        enum(("self", "identity", "full"), booleans=("yes", "no"), since={"full": 258}),
        "",
        "identity",
        "the string form of PrivateUsers=",
    ),
    (
        "PrivatePIDs",
        enum(("yes", "no"), booleans=("yes", "no")),
        "",
        "yes",
        "a boolean sent as a string; the unit's main process is PID 1 of its own PID namespace",
    ),
    ("ProtectHostname", ex_enum({"private": 258}), "", "yes", ""),
    ("ProtectClock", BOOL, "", "yes", ""),
    ("ProtectKernelTunables", BOOL, "", "yes", ""),
    ("ProtectKernelModules", BOOL, "", "yes", ""),
    ("ProtectKernelLogs", BOOL, "", "yes", ""),
    ("ProtectControlGroups", ex_enum({"private": 257, "strict": 257}), "", "yes", ""),
    (
        "ProtectControlGroupsEx",
        enum(("private", "strict"), booleans=("yes", "no")),
        "",
        "strict",
        "the string form of ProtectControlGroups=",
    ),
    (
        "RestrictAddressFamilies",
        filter_list(r"AF_[A-Z0-9_]+", "address families"),
        "",
        "AF_UNIX AF_INET",
        "",
    ),
    (
        "RestrictFileSystems",
        filter_list(r"@?[a-z0-9_.-]+", "file system types and @groups"),
        "",
        "~@network",
        "",
    ),
    ("RestrictNamespaces", _NAMESPACES, "", "~user net", ""),
    ("LockPersonality", BOOL, "", "yes", ""),
    ("MemoryDenyWriteExecute", BOOL, "", "yes", ""),
    ("RestrictRealtime", BOOL, "", "yes", ""),
    ("RestrictSUIDSGID", BOOL, "", "yes", ""),
    ("RemoveIPC", BOOL, "", "yes", ""),
    ("RootEphemeral", BOOL, "", "yes", ""),
    ("MemoryKSM", BOOL, "", "yes", ""),
    ("SetLoginEnvironment", BOOL, "", "yes", ""),
    ("CoredumpReceive", BOOL, "", "yes", ""),
    ("BindLogSockets", BOOL, "", "yes", ""),
    ("PrivateMounts", BOOL, "", "yes", ""),
    ("MountFlags", MOUNT_FLAGS, "", "slave", ""),
    # System call filtering
    (
        "SystemCallFilter",
        filter_list(_SYSCALL, "system call names and @groups"),
        "",
        "~@mount @clock",
        "",
    ),
    ("SystemCallErrorNumber", SYSCALL_ERRNO, "", "EPERM", ""),
    ("SystemCallArchitectures", strv(item=r"[a-z0-9_-]+", what="architectures"), "", "native", ""),
    (
        "SystemCallLog",
        filter_list(_SYSCALL, "system call names and @groups"),
        "",
        "@privileged",
        "",
    ),
    # Environment
    ("Environment", ENVIRONMENT, "", "A=1 B=2", ""),
    ("EnvironmentFile", ENVIRONMENT_FILES, "EnvironmentFiles", "-/etc/default/app", ""),
    (
        "PassEnvironment",
        strv(item=r"[A-Za-z_][A-Za-z0-9_]*", what="variable names", cunescape=True),
        "",
        "LANG TZ",
        "",
    ),
    (
        "UnsetEnvironment",
        strv(
            item=r"[A-Za-z_][A-Za-z0-9_]*(=.*)?", what="variable names or VAR=VALUE", cunescape=True
        ),
        "",
        "TMPDIR",
        "",
    ),
    # Logging
    ("LogLevelMax", LOG_LEVEL, "", "info", ""),
    ("LogExtraFields", LOG_EXTRA_FIELDS, "", "APP=box", ""),
    ("LogRateLimitIntervalSec", TIMESPAN, "LogRateLimitIntervalUSec", "30s", ""),
    ("LogRateLimitBurst", integer("u", 0, _U32), "", "1000", ""),
    ("LogNamespace", string("a journal namespace name", r"[A-Za-z0-9_.-]*"), "", "box", ""),
    ("SyslogIdentifier", STRING, "", "box", ""),
    ("SyslogFacility", SYSLOG_FACILITY, "", "local3", ""),
    ("SyslogLevel", LOG_LEVEL, "", "notice", ""),
    ("SyslogLevelPrefix", BOOL, "", "no", ""),
    ("TTYPath", ABSPATH, "", "/dev/tty9", ""),
    ("TTYReset", BOOL, "", "yes", ""),
    ("TTYVHangup", BOOL, "", "yes", ""),
    ("TTYRows", integer("u", 0, _U32), "", "24", ""),
    ("TTYColumns", integer("u", 0, _U32), "", "80", ""),
    ("TTYVTDisallocate", BOOL, "", "yes", ""),
    # Credentials
    ("LoadCredential", LOAD_CREDENTIAL, "", "token:/etc/token", ""),
    ("LoadCredentialEncrypted", LOAD_CREDENTIAL, "", "token:/etc/token.cred", ""),
    ("SetCredential", SET_CREDENTIAL, "", "token:hello", ""),
    ("SetCredentialEncrypted", SET_CREDENTIAL_ENCRYPTED, "", "token:aGVsbG8=", ""),
    # System V compatibility
    ("UtmpIdentifier", STRING, "", "box", ""),
    ("UtmpMode", enum(("init", "login", "user")), "", "user", ""),
]

_RESOURCE: list[Row] = [
    ("CPUAccounting", BOOL, "", "yes", ""),
    ("CPUWeight", CPU_WEIGHT, "", "50", ""),
    ("StartupCPUWeight", CPU_WEIGHT, "", "50", ""),
    (
        "CPUQuota",
        CPU_QUOTA,
        "CPUQuotaPerSecUSec",
        "20%",
        "a bare number above 1 is refused: 20 means '20%' (or 0.2)",
    ),
    ("CPUQuotaPeriodSec", timespan(empty_is_infinity=True), "CPUQuotaPeriodUSec", "10ms", ""),
    ("AllowedCPUs", CPU_SET, "", "0-1", ""),
    ("StartupAllowedCPUs", CPU_SET, "", "0", ""),
    ("MemoryAccounting", BOOL, "", "yes", ""),
    ("MemoryMin", MEMORY, "", "16M", ""),
    ("MemoryLow", MEMORY, "", "32M", ""),
    ("MemoryHigh", MEMORY, "", "400M", ""),
    ("MemoryMax", MEMORY, "", "512M", ""),
    ("MemorySwapMax", MEMORY, "", "0", ""),
    ("MemoryZSwapMax", MEMORY, "", "64M", ""),
    ("MemoryZSwapWriteback", BOOL, "", "no", ""),
    (
        "MemoryPressureWatch",
        enum(("auto", "skip"), booleans=("yes", "no")),
        "",
        "auto",
        "",
    ),
    ("MemoryPressureThresholdSec", TIMESPAN, "MemoryPressureThresholdUSec", "100ms", ""),
    ("DefaultMemoryMin", MEMORY, "", "1M", ""),
    ("DefaultMemoryLow", MEMORY, "", "1M", ""),
    ("AllowedMemoryNodes", CPU_SET, "", "0", ""),
    ("StartupAllowedMemoryNodes", CPU_SET, "", "0", ""),
    ("TasksAccounting", BOOL, "", "yes", ""),
    ("TasksMax", TASKS, "", "64", ""),
    ("IOAccounting", BOOL, "", "yes", ""),
    ("IOWeight", integer("t", 1, 10000, "a weight"), "", "200", ""),
    ("StartupIOWeight", integer("t", 1, 10000, "a weight"), "", "200", ""),
    ("IODeviceWeight", IO_DEVICE_WEIGHT, "", "/dev/null 200", ""),
    ("IOReadBandwidthMax", IO_LIMIT, "", "/dev/null 10M", ""),
    ("IOWriteBandwidthMax", IO_LIMIT, "", "/dev/null 10M", ""),
    ("IOReadIOPSMax", IO_LIMIT, "", "/dev/null 1K", ""),
    ("IOWriteIOPSMax", IO_LIMIT, "", "/dev/null 1K", ""),
    ("IODeviceLatencyTargetSec", IO_LATENCY, "IODeviceLatencyTargetUSec", "/dev/null 25ms", ""),
    ("IPAccounting", BOOL, "", "yes", ""),
    ("IPAddressAllow", IP_ADDRESSES, "", "localhost 10.0.0.0/8", ""),
    ("IPAddressDeny", IP_ADDRESSES, "", "any", ""),
    ("SocketBindAllow", SOCKET_BIND, "", "ipv4:tcp:8080", ""),
    ("SocketBindDeny", SOCKET_BIND, "", "any", ""),
    ("RestrictNetworkInterfaces", filter_list(r"[^\s/]+", "network interface names"), "", "lo", ""),
    ("IPIngressFilterPath", BPF_PATHS, "", "/sys/fs/bpf/ingress", ""),
    ("IPEgressFilterPath", BPF_PATHS, "", "/sys/fs/bpf/egress", ""),
    ("BPFProgram", BPF_PROGRAM, "", "egress:/sys/fs/bpf/egress", ""),
    ("DeviceAllow", DEVICE_ALLOW, "", "/dev/null rw", ""),
    ("DevicePolicy", enum(("auto", "closed", "strict")), "", "closed", ""),
    ("Slice", string("a slice unit name", r"[A-Za-z0-9:_.\\-]+\.slice"), "", "box.slice", ""),
    ("Delegate", DELEGATE, "", "yes", "a controller list sets DelegateControllers"),
    ("DisableControllers", CONTROLLERS, "", "memory", ""),
    ("ManagedOOMSwap", _OOM, "", "kill", ""),
    ("ManagedOOMMemoryPressure", _OOM, "", "kill", ""),
    ("ManagedOOMMemoryPressureLimit", PERCENT_SCALE, "", "60%", ""),
    ("ManagedOOMPreference", enum(("none", "avoid", "omit")), "", "avoid", ""),
    (
        "ManagedOOMMemoryPressureDurationSec",
        TIMESPAN,
        "ManagedOOMMemoryPressureDurationUSec",
        "20s",
        "",
    ),
    ("DelegateSubgroup", string("a cgroup name", r"[A-Za-z0-9_.:-]+"), "", "payload", ""),
    # cgroup v1 ("legacy") settings, still accepted by systemd 252
    ("CPUShares", integer("t", 2, 262144, "CPU shares"), "", "512", "cgroup v1"),
    ("StartupCPUShares", integer("t", 2, 262144, "CPU shares"), "", "512", "cgroup v1"),
    ("MemoryLimit", MEMORY, "", "512M", "cgroup v1"),
    ("BlockIOAccounting", BOOL, "", "yes", "cgroup v1"),
    ("BlockIOWeight", integer("t", 10, 1000, "a weight"), "", "500", "cgroup v1"),
    ("StartupBlockIOWeight", integer("t", 10, 1000, "a weight"), "", "500", "cgroup v1"),
    ("BlockIODeviceWeight", IO_DEVICE_WEIGHT, "", "/dev/null 500", "cgroup v1"),
    ("BlockIOReadBandwidth", IO_LIMIT, "", "/dev/null 10M", "cgroup v1"),
    ("BlockIOWriteBandwidth", IO_LIMIT, "", "/dev/null 10M", "cgroup v1"),
]

_KILL: list[Row] = [
    ("KillMode", enum(("control-group", "mixed", "process", "none")), "", "mixed", ""),
    ("KillSignal", SIGNAL, "", "SIGTERM", ""),
    ("RestartKillSignal", SIGNAL, "", "SIGINT", ""),
    ("FinalKillSignal", SIGNAL, "", "SIGKILL", ""),
    ("WatchdogSignal", SIGNAL, "", "SIGABRT", ""),
    ("ReloadSignal", SIGNAL, "", "SIGUSR1", ""),
    ("SendSIGHUP", BOOL, "", "yes", ""),
    ("SendSIGKILL", BOOL, "", "yes", ""),
]

_SERVICE: list[Row] = [
    ("ExitType", enum(("main", "cgroup")), "", "cgroup", ""),
    ("RemainAfterExit", BOOL, "", "yes", ""),
    ("GuessMainPID", BOOL, "", "no", ""),
    ("PIDFile", ABSPATH, "", "/run/box.pid", "only meaningful with Type=forking"),
    (
        "BusName",
        string("a D-Bus name", r"[A-Za-z0-9_.:-]+"),
        "",
        "org.example.Box",
        "only meaningful with Type=dbus",
    ),
    ("RestartSec", TIMESPAN, "RestartUSec", "100ms", ""),
    ("TimeoutStartSec", TIMESPAN, "TimeoutStartUSec", "30s", ""),
    ("TimeoutStopSec", TIMESPAN, "TimeoutStopUSec", "10s", ""),
    ("TimeoutAbortSec", TIMESPAN, "TimeoutAbortUSec", "10s", ""),
    (
        "TimeoutSec",
        TIMEOUT_BOTH,
        "TimeoutStartUSec",
        "30s",
        "sets both TimeoutStartUSec and TimeoutStopUSec",
    ),
    ("TimeoutStartFailureMode", enum(("terminate", "abort", "kill")), "", "kill", ""),
    ("TimeoutStopFailureMode", enum(("terminate", "abort", "kill")), "", "kill", ""),
    ("RuntimeMaxSec", TIMESPAN, "RuntimeMaxUSec", "5min 3s", ""),
    ("RuntimeRandomizedExtraSec", TIMESPAN, "RuntimeRandomizedExtraUSec", "10s", ""),
    ("WatchdogSec", TIMESPAN, "WatchdogUSec", "30s", ""),
    (
        "Restart",
        enum(
            ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
        ),
        "",
        "no",
        "",
    ),
    ("RestartSteps", integer("u", 0, _U32), "", "3", ""),
    ("RestartMaxDelaySec", TIMESPAN, "RestartMaxDelayUSec", "10s", ""),
    ("RestartMode", enum(("normal", "direct", "debug"), since={"debug": 257}), "", "direct", ""),
    (
        "FileDescriptorStorePreserve",
        enum(("no", "yes", "restart"), booleans=("yes", "no")),
        "",
        "restart",
        "",
    ),
    ("SuccessExitStatus", EXIT_STATUS, "", "3 SIGUSR1", ""),
    ("RestartPreventExitStatus", EXIT_STATUS, "", "255", ""),
    ("RestartForceExitStatus", EXIT_STATUS, "", "SIGABRT", ""),
    ("RootDirectoryStartOnly", BOOL, "", "yes", ""),
    ("PermissionsStartOnly", BOOL, "", "yes", "deprecated"),
    ("NotifyAccess", enum(("none", "main", "exec", "all")), "", "main", ""),
    ("FileDescriptorStoreMax", integer("u", 0, _U32), "", "4", ""),
    ("OOMPolicy", enum(("continue", "stop", "kill")), "", "kill", ""),
    ("USBFunctionDescriptors", ABSPATH, "", "/etc/usb/desc", "only meaningful with sockets"),
    ("USBFunctionStrings", ABSPATH, "", "/etc/usb/strings", "only meaningful with sockets"),
]

#: Directives newer than systemd 252, by the version that introduced them (from the
#: "Added in version" notes of systemd 257's man pages and its NEWS; 258 from its NEWS).
SINCE: dict[str, int] = {
    "MemoryZSwapMax": 253,
    "ReloadSignal": 253,
    "RootEphemeral": 254,
    "MemoryKSM": 254,
    "DelegateSubgroup": 254,
    "MemoryPressureWatch": 254,
    "MemoryPressureThresholdSec": 254,
    "RestartSteps": 254,
    "RestartMaxDelaySec": 254,
    "RestartMode": 254,
    "FileDescriptorStorePreserve": 254,
    "SetLoginEnvironment": 255,
    "CoredumpReceive": 255,
    "MemoryZSwapWriteback": 256,
    "PrivatePIDs": 257,
    "PrivateUsersEx": 257,
    "ProtectControlGroupsEx": 257,
    "PrivateTmpEx": 257,
    "BindLogSockets": 257,
    "ManagedOOMMemoryPressureDurationSec": 257,
}

#: Bus properties newer than systemd 252 that a directive of the table may set besides
#: its own: the ``…Ex`` string forms of boolean directives.
BUS_SINCE: dict[str, int] = {
    "PrivateUsersEx": 257,
    "ProtectControlGroupsEx": 257,
    "PrivateTmpEx": 257,
    "ProtectHostnameEx": 258,
}

TABLE: dict[str, list[Row]] = {
    "systemd.exec(5)": _EXEC + RLIMITS,
    "systemd.resource-control(5)": _RESOURCE,
    "systemd.kill(5)": _KILL,
    "systemd.service(5)": _SERVICE,
}

_OURS_EXEC = (
    "sandboxed runs its own worker as the unit's only command: the function call is what runs"
)
_OURS_STDIO = (
    "sandboxed hands the worker its channel to the caller on stdin/stdout (and reads stderr), "
    "so the unit's standard streams are not free"
)

#: Directives systemd accepts for a transient service but sandboxed refuses:
#: name → (man page, kind, why).
RESERVED: dict[str, tuple[str, Kind, str]] = {
    **{
        name: ("systemd.service(5)", STRING, _OURS_EXEC)
        for base in (
            "ExecCondition",
            "ExecStartPre",
            "ExecStart",
            "ExecStartPost",
            "ExecReload",
            "ExecStop",
            "ExecStopPost",
        )
        for name in (base, base + "Ex")
    },
    **{
        name: ("systemd.exec(5)", STRING, _OURS_STDIO)
        for name in (
            "StandardInput",
            "StandardOutput",
            "StandardError",
            "StandardInputText",
            "StandardInputData",
        )
    },
    "Type": (
        "systemd.service(5)",
        STRING,
        "sandboxed decides how its worker signals readiness; Type= would change when "
        "StartTransientUnit's job completes",
    ),
}
