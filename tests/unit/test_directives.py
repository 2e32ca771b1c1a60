"""Directives normalise once, compare by meaning, and produce systemd-run's bus properties."""

from __future__ import annotations

import datetime
import pathlib
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxed._errors import InvalidDirectiveValueError, UnknownDirectiveError
from sandboxed.directives.directive import DIRECTIVES, Directive, RawProperty, lookup

# (directive, value given, expected bus properties)
CONVERSIONS: list[tuple[str, object, list[tuple[str, str, object]]]] = [
    ("CPUQuota", 0.2, [("CPUQuotaPerSecUSec", "t", 200_000)]),
    ("CPUQuota", "20%", [("CPUQuotaPerSecUSec", "t", 200_000)]),
    ("CPUQuota", 1, [("CPUQuotaPerSecUSec", "t", 1_000_000)]),
    ("CPUQuota", "200%", [("CPUQuotaPerSecUSec", "t", 2_000_000)]),
    ("CPUQuota", "12.5%", [("CPUQuotaPerSecUSec", "t", 125_000)]),
    ("MemoryMax", "512M", [("MemoryMax", "t", 512 * 2**20)]),
    ("MemoryMax", 512 * 2**20, [("MemoryMax", "t", 512 * 2**20)]),
    ("MemoryMax", "infinity", [("MemoryMax", "t", 2**64 - 1)]),
    ("MemoryMax", "50%", [("MemoryMaxScale", "u", 2**31)]),
    ("MemoryHigh", 0.5, [("MemoryHighScale", "u", 2**31)]),
    ("TasksMax", 64, [("TasksMax", "t", 64)]),
    ("TasksMax", "10%", [("TasksMaxScale", "u", 429496730)]),
    ("PrivateNetwork", True, [("PrivateNetwork", "b", True)]),
    ("PrivateNetwork", "yes", [("PrivateNetwork", "b", True)]),
    ("PrivateTmp", "off", [("PrivateTmp", "b", False)]),
    ("ProtectSystem", "strict", [("ProtectSystem", "s", "strict")]),
    ("ProtectSystem", True, [("ProtectSystem", "s", "yes")]),
    ("ProtectHome", "read-only", [("ProtectHome", "s", "read-only")]),
    ("User", "nobody", [("User", "s", "nobody")]),
    ("User", 65534, [("User", "s", "65534")]),
    ("WorkingDirectory", pathlib.Path("/tmp"), [("WorkingDirectory", "s", "/tmp")]),
    ("UMask", "0077", [("UMask", "u", 0o77)]),
    ("UMask", 0o22, [("UMask", "u", 0o22)]),
    ("ReadWritePaths", "-/var/lib/x /tmp", [("ReadWritePaths", "as", ["-/var/lib/x", "/tmp"])]),
    ("ReadOnlyPaths", [pathlib.Path("/usr"), "/etc"], [("ReadOnlyPaths", "as", ["/usr", "/etc"])]),
    (
        "SystemCallFilter",
        "~@mount @clock",
        [("SystemCallFilter", "(bas)", (False, ["@clock", "@mount"]))],
    ),
    (
        "SystemCallFilter",
        ["@system-service"],
        [("SystemCallFilter", "(bas)", (True, ["@system-service"]))],
    ),
    (
        "RestrictAddressFamilies",
        "AF_UNIX AF_INET",
        [("RestrictAddressFamilies", "(bas)", (True, ["AF_INET", "AF_UNIX"]))],
    ),
    ("SystemCallArchitectures", "native", [("SystemCallArchitectures", "as", ["native"])]),
    ("CapabilityBoundingSet", "CAP_NET_RAW", [("CapabilityBoundingSet", "t", 1 << 13)]),
    (
        "CapabilityBoundingSet",
        "~CAP_NET_RAW",
        [("CapabilityBoundingSet", "t", (2**64 - 1) ^ (1 << 13))],
    ),
    ("AmbientCapabilities", ["cap_chown", "CAP_KILL"], [("AmbientCapabilities", "t", 1 | 1 << 5)]),
    ("RestrictNamespaces", True, [("RestrictNamespaces", "t", 0)]),
    ("RestrictNamespaces", False, [("RestrictNamespaces", "t", 0x7E020000)]),
    ("RestrictNamespaces", "~net", [("RestrictNamespaces", "t", 0x7E020000 & ~0x40000000)]),
    ("LimitNOFILE", 1024, [("LimitNOFILE", "t", 1024), ("LimitNOFILESoft", "t", 1024)]),
    ("LimitNOFILE", "1024:4096", [("LimitNOFILE", "t", 4096), ("LimitNOFILESoft", "t", 1024)]),
    ("LimitCORE", "infinity", [("LimitCORE", "t", 2**64 - 1), ("LimitCORESoft", "t", 2**64 - 1)]),
    ("LimitNICE", "+5", [("LimitNICE", "t", 15), ("LimitNICESoft", "t", 15)]),
    ("Environment", "A=1 B=2", [("Environment", "as", ["A=1", "B=2"])]),
    ("Environment", {"A": "x y"}, [("Environment", "as", ["A=x y"])]),
    ("RuntimeMaxSec", "5min 3s", [("RuntimeMaxUSec", "t", 303_000_000)]),
    ("RuntimeMaxSec", datetime.timedelta(seconds=3), [("RuntimeMaxUSec", "t", 3_000_000)]),
    ("TimeoutStopSec", 10, [("TimeoutStopUSec", "t", 10_000_000)]),
    ("TimeoutStopSec", "infinity", [("TimeoutStopUSec", "t", 2**64 - 1)]),
    (
        "TimeoutSec",
        "30s",
        [("TimeoutStartUSec", "t", 30_000_000), ("TimeoutStopUSec", "t", 30_000_000)],
    ),
    ("KillMode", "mixed", [("KillMode", "s", "mixed")]),
    ("KillSignal", signal.SIGTERM, [("KillSignal", "i", 15)]),
    ("KillSignal", "SIGKILL", [("KillSignal", "i", 9)]),
    (
        "BindPaths",
        "-/a:/b:norbind /c",
        [("BindPaths", "a(ssbt)", [("/a", "/b", True, 0), ("/c", "/c", False, 16384)])],
    ),
    (
        "BindReadOnlyPaths",
        [("/usr", "/opt")],
        [("BindReadOnlyPaths", "a(ssbt)", [("/usr", "/opt", False, 16384)])],
    ),
    (
        "TemporaryFileSystem",
        "/run:size=10M",
        [("TemporaryFileSystem", "a(ss)", [("/run", "size=10M")])],
    ),
    (
        "IPAddressDeny",
        "any",
        [("IPAddressDeny", "a(iayu)", [(2, bytes(4), 0), (10, bytes(16), 0)])],
    ),
    (
        "IPAddressAllow",
        "10.1.2.3/8",
        [("IPAddressAllow", "a(iayu)", [(2, bytes([10, 1, 2, 3]), 8)])],
    ),
    ("EnvironmentFile", "-/etc/x", [("EnvironmentFiles", "a(sb)", [("/etc/x", True)])]),
    ("DeviceAllow", ("/dev/null", "rw"), [("DeviceAllow", "a(ss)", [("/dev/null", "rw")])]),
    ("CPUAffinity", "0-2 4", [("CPUAffinity", "ay", bytes([0b10111]) + bytes(7))]),
    ("CPUAffinity", "numa", [("CPUAffinityFromNUMA", "b", True)]),
    ("Delegate", "cpu memory", [("DelegateControllers", "as", ["cpu", "memory"])]),
    ("Delegate", True, [("Delegate", "b", True)]),
    (
        "StateDirectory",
        "a b:c",
        [("StateDirectory", "as", ["a"]), ("StateDirectorySymlink", "a(sst)", [("b", "c", 0)])],
    ),
    ("SuccessExitStatus", "3 SIGUSR1 1", [("SuccessExitStatus", "(aiai)", ([1, 3], [10]))]),
    ("SystemCallErrorNumber", "EPERM", [("SystemCallErrorNumber", "i", 1)]),
    ("LogLevelMax", "info", [("LogLevelMax", "i", 6)]),
    ("CPUSchedulingPolicy", "batch", [("CPUSchedulingPolicy", "i", 3)]),
    ("MountFlags", "slave", [("MountFlags", "t", 1 << 19)]),
    ("SetCredential", "id:a\\x00b", [("SetCredential", "a(say)", [("id", b"a\x00b")])]),
    ("LoadCredential", "tok", [("LoadCredential", "a(ss)", [("tok", "tok")])]),
    ("ManagedOOMMemoryPressureLimit", "50%", [("ManagedOOMMemoryPressureLimit", "u", 2**31)]),
    ("CPUQuotaPeriodSec", "", [("CPUQuotaPeriodUSec", "t", 2**64 - 1)]),
    (
        "IOReadBandwidthMax",
        "/dev/sda 10M",
        [("IOReadBandwidthMax", "a(st)", [("/dev/sda", 10**7)])],
    ),
    ("SocketBindAllow", "ipv6:udp:53", [("SocketBindAllow", "a(iiqq)", [(10, 17, 1, 53)])]),
]


@pytest.mark.parametrize(
    ("name", "value", "expected"), CONVERSIONS, ids=[f"{n}={v!r}" for n, v, _ in CONVERSIONS]
)
def test_directive_produces_systemd_runs_properties(
    name: str, value: object, expected: object
) -> None:
    assert Directive.of(name, value).properties() == expected


@pytest.mark.parametrize(
    ("name", "value", "expected"), CONVERSIONS, ids=[f"{n}={v!r}" for n, v, _ in CONVERSIONS]
)
def test_normal_form_and_spelling_are_stable(name: str, value: object, expected: object) -> None:
    d = Directive.of(name, value)
    assert Directive.of(d.name, d.value) == d
    assert Directive.parse(str(d)) == d
    assert hash(Directive.parse(str(d))) == hash(d)


@pytest.mark.parametrize("name", sorted(n for n, s in DIRECTIVES.items() if not s.reserved))
def test_every_example_in_the_table_converts_and_round_trips(name: str) -> None:
    spec = DIRECTIVES[name]
    d = Directive.of(name, spec.example)
    assert Directive.of(name, d.value) == d
    assert Directive.parse(str(d)) == d
    props = d.properties()
    assert props, f"{name}={spec.example} sends nothing"
    for bus, _sig, _value in props:
        assert bus in spec.bus_names


def test_cpu_quota_fraction_percent_and_normal_form_are_one_key() -> None:
    a, b = Directive.of("CPUQuota", 0.2), Directive.of("CPUQuota", "20%")
    c = Directive.of("CPUQuota", a.value)
    assert a == b == c
    assert len({a, b, c}) == 1
    assert str(a) == "CPUQuota=20%"


def test_parse_reads_an_assignment() -> None:
    assert Directive.parse("CPUQuota=20%") == Directive.of("CPUQuota", 0.2)
    assert Directive.parse("Environment=A=1") == Directive.of("Environment", ["A=1"])


# -- merging --------------------------------------------------------------------------------


def test_list_directives_append_and_an_empty_value_resets() -> None:
    a = Directive.of("ReadWritePaths", "/a")
    b = Directive.of("ReadWritePaths", ["/b"])
    assert a.merge(b) == Directive.of("ReadWritePaths", "/a /b")
    assert a.merge(Directive.of("ReadWritePaths", "")) == Directive.of("ReadWritePaths", "")
    assert a.spec.list_valued


def test_environment_merges_in_order() -> None:
    merged = Directive.of("Environment", "A=1").merge(Directive.of("Environment", "A=2"))
    assert merged.properties() == [("Environment", "as", ["A=1", "A=2"])]


def test_system_call_filters_keep_systemds_clause_order() -> None:
    allow = Directive.of("SystemCallFilter", "@system-service")
    deny = Directive.of("SystemCallFilter", "~@mount")
    merged = allow.merge(deny)
    assert merged.properties() == [
        ("SystemCallFilter", "(bas)", (True, ["@system-service"])),
        ("SystemCallFilter", "(bas)", (False, ["@mount"])),
    ]
    assert str(merged) == "SystemCallFilter=@system-service\nSystemCallFilter=~@mount"
    assert Directive.parse(str(merged)) == merged


def test_system_call_filters_of_one_sign_unite() -> None:
    merged = Directive.of("SystemCallFilter", "~@mount").merge(
        Directive.of("SystemCallFilter", "~@clock")
    )
    assert merged == Directive.of("SystemCallFilter", "~@clock @mount")


def test_capability_sets_merge_like_unit_file_lines() -> None:
    drop_admin = Directive.of("CapabilityBoundingSet", "~CAP_SYS_ADMIN")
    drop_raw = Directive.of("CapabilityBoundingSet", "~CAP_NET_RAW")
    assert drop_admin.merge(drop_raw) == Directive.of(
        "CapabilityBoundingSet", "~CAP_SYS_ADMIN CAP_NET_RAW"
    )
    keep = Directive.of("CapabilityBoundingSet", "CAP_CHOWN CAP_KILL")
    assert keep.merge(Directive.of("CapabilityBoundingSet", "~CAP_KILL")) == Directive.of(
        "CapabilityBoundingSet", "CAP_CHOWN"
    )


def test_single_valued_directives_do_not_merge() -> None:
    a = Directive.of("CPUQuota", "20%")
    assert not a.spec.list_valued
    with pytest.raises(ValueError, match="single value"):
        a.merge(Directive.of("CPUQuota", "30%"))


def test_different_directives_do_not_merge() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        Directive.of("ReadWritePaths", "/a").merge(Directive.of("ReadOnlyPaths", "/a"))


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("CPUQuta", "CPUQuota"),
        ("cpuquota", "CPUQuota"),
        ("MemoryMaximum", "MemoryMax"),
        ("PrivateNetworking", "PrivateNetwork"),
        ("ReadWritePath", "ReadWritePaths"),
    ],
)
def test_unknown_directive_suggests_the_closest_names(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownDirectiveError) as info:
        Directive.of(name, "x")
    assert info.value.directive == name
    assert suggestion in info.value.suggestions
    assert name in str(info.value) and suggestion in str(info.value)
    assert isinstance(info.value, ValueError)


def test_lookup_of_a_name_with_nothing_close_has_no_suggestions() -> None:
    with pytest.raises(UnknownDirectiveError) as info:
        lookup("Zzzzzzzz")
    assert info.value.suggestions == ()


BAD_VALUES: list[tuple[str, object]] = [
    ("CPUQuota", "lots"),
    ("CPUQuota", "0%"),
    ("CPUQuota", -0.5),
    ("CPUQuota", True),
    ("MemoryMax", "512Q"),
    ("MemoryMax", -1),
    ("MemoryMax", "150%"),
    ("TasksMax", "many"),
    ("PrivateNetwork", "perhaps"),
    ("PrivateNetwork", 2),
    ("ProtectSystem", "very"),
    ("ProtectHome", "sometimes"),
    ("User", ""),
    ("User", "no body"),
    ("User", 1.5),
    ("UMask", "999"),
    ("UMask", "rwx"),
    ("ReadWritePaths", "relative/path"),
    ("ReadWritePaths", [1, 2]),
    ("WorkingDirectory", "relative"),
    ("SystemCallFilter", "~@mount $bad"),
    ("RestrictAddressFamilies", "AF_UNIX inet"),
    ("RestrictAddressFamilies", "none"),
    ("CapabilityBoundingSet", "CAP_FLY"),
    ("RestrictNamespaces", "~network"),
    ("LimitNOFILE", "4096:1024"),
    ("LimitNOFILE", "lots"),
    ("LimitNICE", "+25"),
    ("Environment", "NOT_AN_ASSIGNMENT"),
    ("Environment", "1A=x"),
    ("RuntimeMaxSec", "soon"),
    ("RuntimeMaxSec", -1),
    ("TimeoutStopSec", "5 parsecs"),
    ("KillMode", "gently"),
    ("KillSignal", "SIGFOO"),
    ("BindPaths", "/a:/b:sideways"),
    ("BindPaths", "a:/b"),
    ("TemporaryFileSystem", "run"),
    ("IPAddressDeny", "everything"),
    ("IPAddressAllow", "10.0.0.0/33"),
    ("DeviceAllow", "/dev/null rwx"),
    ("IOReadBandwidthMax", "/dev/sda"),
    ("SocketBindAllow", "tcp:70000"),
    ("CPUAffinity", "0-a"),
    ("NUMAMask", "all"),
    ("SystemCallErrorNumber", "ENOTANERRNO"),
    ("LogLevelMax", "chatty"),
    ("SuccessExitStatus", "300"),
    ("StateDirectory", "/absolute"),
    ("SetCredential", "no-colon"),
    ("SetCredentialEncrypted", "id:!!!"),
    ("RootHash", "abc"),
    ("Slice", "not-a-slice"),
    ("Delegate", "cpu gpu"),
    ("CPUWeight", 0.5),
    ("IOWeight", 0),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_bad_values_name_the_directive_the_value_and_what_is_accepted(
    name: str, value: object
) -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        Directive.of(name, value)
    err = info.value
    assert err.directive == name
    assert err.value == value
    assert err.accepted == DIRECTIVES[name].accepted
    message = str(err)
    assert f"{name}=" in message
    assert repr(value) in message
    assert err.accepted in message
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    "name",
    ["ExecStart", "ExecStopPost", "StandardInput", "StandardOutput", "StandardError", "Type"],
)
def test_directives_sandboxed_sets_itself_are_refused_with_the_reason(name: str) -> None:
    spec = lookup(name)
    assert spec.reserved
    with pytest.raises(InvalidDirectiveValueError) as info:
        Directive.of(name, "anything")
    assert info.value.directive == name
    assert spec.reserved in str(info.value)


def test_parse_refuses_text_without_an_assignment() -> None:
    with pytest.raises(InvalidDirectiveValueError, match="NAME=VALUE"):
        Directive.parse("CPUQuota 20%")


# -- the raw escape hatch -------------------------------------------------------------------


def test_raw_property_is_sent_as_given_and_hashable() -> None:
    raw = RawProperty("IPAddressDeny", "a(iayu)", [(2, b"\0\0\0\0", 0)])
    assert raw.properties() == [("IPAddressDeny", "a(iayu)", [(2, b"\0\0\0\0", 0)])]
    assert hash(raw) == hash(RawProperty("IPAddressDeny", "a(iayu)", ((2, b"\0\0\0\0", 0),)))


@pytest.mark.parametrize(
    ("sig", "value"),
    [
        ("t", -1),
        ("t", True),
        ("b", 1),
        ("s", 5),
        ("as", "abc"),
        ("(st)", ("a",)),
        ("ay", "x"),
        ("u", 2**32),
        ("a{sv}", ["x"]),
        ("q(", 1),
        ("tt", (1, 2)),
    ],
    ids=repr,
)
def test_raw_property_values_must_fit_the_signature(sig: str, value: object) -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        RawProperty("SomeProperty", sig, value)
    assert info.value.directive == "SomeProperty"
    assert sig in str(info.value)


def test_raw_property_names_must_look_like_bus_properties() -> None:
    with pytest.raises(InvalidDirectiveValueError, match="bus property name"):
        RawProperty("not a name", "b", True)


# -- properties of the whole table ----------------------------------------------------------


def test_table_covers_the_core_directives() -> None:
    core = [
        "User",
        "Group",
        "PrivateNetwork",
        "PrivateTmp",
        "ProtectSystem",
        "ProtectHome",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "BindPaths",
        "BindReadOnlyPaths",
        "TemporaryFileSystem",
        "NoNewPrivileges",
        "SystemCallFilter",
        "SystemCallArchitectures",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "LimitNOFILE",
        "Environment",
        "WorkingDirectory",
        "UMask",
        "CPUQuota",
        "MemoryMax",
        "MemoryHigh",
        "MemorySwapMax",
        "TasksMax",
        "RestrictAddressFamilies",
        "ProtectProc",
        "ProcSubset",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "PrivateUsers",
        "ProtectClock",
        "ProtectHostname",
        "ProtectKernelLogs",
        "IPAddressDeny",
        "DynamicUser",
        "KillMode",
        "TimeoutStopSec",
        "RuntimeMaxSec",
    ]
    missing = [n for n in core if n not in DIRECTIVES or DIRECTIVES[n].reserved]
    assert not missing


@given(st.sampled_from(sorted(n for n, s in DIRECTIVES.items() if not s.reserved)))
def test_every_spec_documents_its_accepted_values_and_signature(name: str) -> None:
    spec = DIRECTIVES[name]
    assert spec.accepted
    assert spec.signature
    assert spec.bus_names[0]
    assert spec.section.startswith("systemd.")


@given(st.floats(min_value=0.0001, max_value=1, allow_nan=False))
def test_cpu_quota_float_and_its_spelling_are_the_same_key(fraction: float) -> None:
    d = Directive.of("CPUQuota", fraction)
    text = str(d).split("=", 1)[1]
    assert Directive.of("CPUQuota", text) == d
    assert hash(Directive.of("CPUQuota", text)) == hash(d)


def test_directive_reference_page_is_current() -> None:
    from sandboxed.directives import docgen

    assert docgen.DOC.read_text(encoding="utf-8") == docgen.render(), (
        "docs/directives.md is stale: run python -m sandboxed.directives.docgen"
    )
