"""The containment baseline's algebra and the host-capability rules (pure, no bus)."""

from __future__ import annotations

import pytest

from sandboxed import (
    ConflictingDirectivesError,
    Hardened,
    NoNetwork,
    ReadOnly,
)
from sandboxed.directives import containment
from sandboxed.directives.directive import Directive
from sandboxed.directives.enforcement import unenforceable
from sandboxed.directives.facts import HostFacts
from sandboxed.directives.options import OptionSet


def _applied(*presets: object, **kw: object) -> dict[str, Directive]:
    return {d.name: d for d in containment.apply(OptionSet.build(*presets, **kw).directives)}


def _spelled(d: Directive) -> str:
    return "; ".join(d.spec.render(d.value))


@pytest.mark.parametrize(
    "presets",
    [(), (NoNetwork,), (ReadOnly,), (Hardened,), (NoNetwork | ReadOnly,)],
    ids=["none", "NoNetwork", "ReadOnly", "Hardened", "NoNetwork|ReadOnly"],
)
def test_every_preset_gets_the_whole_baseline(presets: tuple[object, ...]) -> None:
    got = _applied(*presets)
    for name in containment.BASELINE:
        assert name in got, name
    assert got["PrivateUsers"].value is True
    assert got["ProtectControlGroups"].value is True
    assert "/run:ro,mode=0755" in _spelled(got["TemporaryFileSystem"])
    caps = _spelled(got["CapabilityBoundingSet"]).lower()
    for cap in ("cap_sys_admin", "cap_sys_ptrace", "cap_sys_boot", "cap_bpf", "cap_net_admin"):
        # Either dropped by a deny list, or absent from an allow list (Hardened: none).
        assert (caps.startswith("~") and cap in caps) or cap not in caps
    filt = _spelled(got["SystemCallFilter"])
    assert "io_uring_setup" in filt and "@reboot" in filt


def test_a_users_capability_set_cannot_widen_the_baseline() -> None:
    got = _applied(CapabilityBoundingSet="CAP_SYS_ADMIN CAP_NET_BIND_SERVICE CAP_SYS_PTRACE")
    assert _spelled(got["CapabilityBoundingSet"]).lower() == "cap_net_bind_service"


def test_a_users_address_family_allow_list_keeps_vsock_out() -> None:
    got = _applied(RestrictAddressFamilies="AF_UNIX AF_VSOCK AF_INET")
    assert _spelled(got["RestrictAddressFamilies"]) == "AF_INET AF_UNIX"


def test_a_users_namespace_allow_list_is_intersected_to_none() -> None:
    got = _applied(RestrictNamespaces="net user")
    assert got["RestrictNamespaces"] == containment.BASELINE["RestrictNamespaces"]


def test_a_users_system_call_filter_keeps_the_baselines_denials() -> None:
    got = _applied(SystemCallFilter="~@clock")
    filt = _spelled(got["SystemCallFilter"])
    assert "@clock" in filt and "io_uring_enter" in filt and "bpf" in filt


def test_a_users_errno_choice_is_kept() -> None:
    assert _applied(SystemCallErrorNumber="EACCES")["SystemCallErrorNumber"].value == (
        Directive.of("SystemCallErrorNumber", "EACCES").value
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"PrivateUsers": False},
        {"ProtectControlGroups": False},
        {"NoNewPrivileges": False},
        {"ProtectKernelTunables": False},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_a_value_that_weakens_the_baseline_is_refused_naming_the_opt_out(
    kw: dict[str, object],
) -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(**kw)
    (name,) = kw
    assert info.value.directive == name
    assert "containment=False" in str(info.value)
    assert "keyword" not in str(info.value)


_STRICT = ("ProtectControlGroupsEx", "s", "strict")


@pytest.mark.parametrize(
    ("kw", "value", "props"),
    [
        # yes in a cgroup namespace of the unit's own: more than the baseline's yes
        ({"ProtectControlGroups": "strict"}, "strict", [_STRICT]),
        ({"ProtectControlGroupsEx": "strict"}, "strict", [_STRICT]),
        ({"ProtectControlGroups": True}, True, [("ProtectControlGroups", "b", True)]),
        ({"ProtectControlGroupsEx": "yes"}, True, [("ProtectControlGroups", "b", True)]),
    ],
    ids=["strict", "Ex=strict", "yes", "Ex=yes"],
)
def test_a_value_at_least_as_strong_as_the_baseline_is_used_in_one_property(
    kw: dict[str, object], value: object, props: list[tuple[str, str, object]]
) -> None:
    OptionSet.build(**kw)  # no conflict when the sandbox is built
    got = _applied(**kw)
    assert got["ProtectControlGroups"].value == value
    assert "ProtectControlGroupsEx" not in got  # one setting, one bus property
    sent = [p for d in got.values() for p in d.properties() if p[0].startswith("ProtectCon")]
    assert sent == props


def test_a_string_spelling_equal_to_a_boolean_baseline_is_the_baseline() -> None:
    got = _applied(PrivateUsersEx="self")
    assert got["PrivateUsers"] == containment.BASELINE["PrivateUsers"]
    assert "PrivateUsersEx" not in got


@pytest.mark.parametrize(
    "kw",
    [
        # writable: systemd itself downgrades it to "no", not "yes", where it cannot hold
        {"ProtectControlGroups": "private"},
        {"ProtectControlGroupsEx": "private"},
        {"ProtectControlGroupsEx": "no"},
        # more of the host's users mapped: root inside reaches more files
        {"PrivateUsers": "identity"},
        {"PrivateUsers": "full"},
        {"PrivateUsersEx": "identity"},
        {"PrivateUsersEx": "no"},
    ],
    ids=lambda kw: "=".join(map(str, next(iter(kw.items())))),
)
def test_a_weaker_graded_value_or_spelling_is_refused_as_written(kw: dict[str, object]) -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(**kw)
    ((name, value),) = kw.items()
    assert info.value.directive == name
    assert f"{name}={value}" in str(info.value)
    assert "would weaken the containment baseline" in str(info.value)
    assert "containment=False" in str(info.value)


def test_both_spellings_given_are_one_setting_given_twice() -> None:
    # As two values of one directive: different ones conflict before the baseline is met.
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(ProtectControlGroups=True, ProtectControlGroupsEx="strict")
    assert "ProtectControlGroups=yes" in str(info.value)
    assert "ProtectControlGroupsEx=strict" in str(info.value)
    got = _applied(ProtectControlGroups="strict", ProtectControlGroupsEx="strict")
    assert got["ProtectControlGroups"].value == "strict"
    assert "ProtectControlGroupsEx" not in got


def test_directives_handed_over_in_both_spellings_take_the_strongest() -> None:
    both = [
        Directive.of("ProtectControlGroups", True),
        Directive.of("ProtectControlGroupsEx", "strict"),
    ]
    got = {d.name: d for d in containment.apply(both)}
    assert got["ProtectControlGroups"].value == "strict"
    assert "ProtectControlGroupsEx" not in got
    with pytest.raises(ConflictingDirectivesError):
        containment.apply(
            [
                Directive.of("ProtectControlGroups", "strict"),
                Directive.of("ProtectControlGroupsEx", "no"),
            ]
        )


@pytest.mark.parametrize("name", ["ProtectControlGroupsEx", "PrivateUsersEx"])
def test_a_raw_string_spelling_cannot_undo_the_baseline(name: str) -> None:
    from sandboxed import RawProperty

    with pytest.raises(ConflictingDirectivesError):
        OptionSet.build(raw=[RawProperty(name, "s", "no")])
    OptionSet.build(raw=[RawProperty(name, "s", "no")], containment=False)


def test_containment_false_takes_a_weakening_value_and_changes_the_key() -> None:
    bare = OptionSet.build(PrivateUsers=False, containment=False)
    assert bare.get("PrivateUsers").value is False  # type: ignore[union-attr]
    assert OptionSet.build(containment=False).key != OptionSet.build().key
    assert "containment=False" in repr(OptionSet.build(containment=False))


def test_containment_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="containment"):
        OptionSet.build(containment="no")  # type: ignore[arg-type]


def test_a_raw_property_cannot_undo_the_baseline() -> None:
    from sandboxed import RawProperty

    with pytest.raises(ConflictingDirectivesError):
        OptionSet.build(raw=[RawProperty("PrivateUsers", "b", False)])


def test_a_raw_errno_cannot_replace_the_one_the_baseline_adds() -> None:
    # The baseline also adds SystemCallErrorNumber=EPERM (unless the user sets one as a
    # directive); a raw property sent after it would be applied over it.
    from sandboxed import RawProperty

    with pytest.raises(ConflictingDirectivesError):
        OptionSet.build(raw=[RawProperty("SystemCallErrorNumber", "i", 38)])
    # Without the baseline it is the user's raw property, sent as given.
    free = OptionSet.build(raw=[RawProperty("SystemCallErrorNumber", "i", 38)], containment=False)
    assert [r.name for r in free.raw] == ["SystemCallErrorNumber"]


_NO_BPF = HostFacts(
    features=frozenset({"+SECCOMP", "-BPF_FRAMEWORK"}), cgroup_layout="hybrid", lsms=frozenset()
)
_ALL = HostFacts(
    features=frozenset({"+BPF_FRAMEWORK"}),
    cgroup_layout="unified",
    lsms=frozenset({"bpf", "apparmor"}),
)


@pytest.mark.parametrize(
    ("names", "facts", "refused"),
    [
        (["SocketBindDeny"], _NO_BPF, ["SocketBindDeny"]),
        (["RestrictFileSystems"], _NO_BPF, ["RestrictFileSystems"]),
        (["IPAddressDeny"], _NO_BPF, []),  # hybrid has a cgroup2 hierarchy
        (["IPAddressDeny"], HostFacts(cgroup_layout="legacy"), ["IPAddressDeny"]),
        (["SocketBindDeny", "RestrictFileSystems", "CPUQuota"], _ALL, []),
        (
            ["RestrictFileSystems"],
            HostFacts(features=frozenset({"+BPF_FRAMEWORK"})),
            ["RestrictFileSystems"],
        ),
        (
            ["SocketBindDeny"],
            HostFacts(features=frozenset({"+BPF_FRAMEWORK"}), cgroup_layout="hybrid"),
            ["SocketBindDeny"],
        ),
    ],
)
def test_unenforceable_directives_follow_the_host_facts(
    names: list[str], facts: HostFacts, refused: list[str]
) -> None:
    got = unenforceable(names, facts)
    assert [n for n, _ in got] == refused
    assert all(reason for _, reason in got)


def test_accept_unenforced_takes_names_or_true() -> None:
    assert OptionSet.build(accept_unenforced=["SocketBindDeny="]).accept_unenforced == (
        "SocketBindDeny",
    )
    assert OptionSet.build(accept_unenforced=True).accept_unenforced is True
    with pytest.raises(ValueError):
        OptionSet.build(accept_unenforced=["NoSuchDirective"])
