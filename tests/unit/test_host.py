"""Refusing what the systemd in use cannot apply, and offering its stronger forms (pure)."""

from __future__ import annotations

import attrs
import pytest

from sandboxed import UnenforceableDirectiveError
from sandboxed.directives.directive import DIRECTIVES, Directive
from sandboxed.directives.enforcement import refuse_unenforceable, unenforceable
from sandboxed.directives.facts import HostFacts
from sandboxed.directives.host import refuse, stronger


@pytest.mark.parametrize(
    ("name", "value", "needed"),
    [
        ("PrivatePIDs", True, 257),
        ("MemoryZSwapMax", "64M", 253),
        ("MemoryZSwapWriteback", False, 256),
        ("PrivateUsers", "identity", 257),
        ("PrivateUsers", "full", 258),
        ("ProtectControlGroups", "private", 257),
        ("PrivateTmp", "disconnected", 257),
        ("ProtectHostname", "private", 258),
        ("RestartMode", "debug", 257),
        ("PrivateUsersEx", "full", 258),
    ],
)
def test_a_directive_newer_than_the_manager_is_refused_naming_both_versions(
    name: str, value: object, needed: int
) -> None:
    d = Directive.of(name, value)
    assert d.needs == needed
    with pytest.raises(UnenforceableDirectiveError) as e:
        refuse([d], HostFacts(needed - 1, "unified"))
    assert (e.value.directive, e.value.needed, e.value.running) == (name, needed, needed - 1)
    assert f"{name}=" in str(e.value)
    assert f"needs systemd {needed}" in str(e.value)
    assert f"systemd {needed - 1} cannot hold" in str(e.value)
    assert isinstance(e.value, ValueError)
    refuse([d], HostFacts(needed, "unified"))  # that version has it


@pytest.mark.parametrize(
    ("name", "value"),
    [("PrivateUsers", True), ("ProtectControlGroups", True), ("PrivateTmp", False)],
)
def test_the_boolean_forms_work_on_every_version(name: str, value: object) -> None:
    d = Directive.of(name, value)
    assert d.needs == 0
    assert d.properties() == [(name, "b", value)]
    refuse([d], HostFacts(252, "hybrid"))


def test_named_values_travel_in_the_ex_property() -> None:
    assert Directive.of("PrivateUsers", "identity").properties() == [
        ("PrivateUsersEx", "s", "identity")
    ]
    assert Directive.of("ProtectControlGroups", "strict").properties() == [
        ("ProtectControlGroupsEx", "s", "strict")
    ]
    assert Directive.of("PrivateTmp", "disconnected").properties() == [
        ("PrivateTmpEx", "s", "disconnected")
    ]


def test_every_refused_directive_is_named_at_once() -> None:
    with pytest.raises(UnenforceableDirectiveError) as e:
        refuse(
            [Directive.of("PrivatePIDs", True), Directive.of("MemoryZSwapMax", "1M")],
            HostFacts(252),
        )
    assert [r[0] for r in e.value.refused] == ["PrivatePIDs", "MemoryZSwapMax"]
    assert (e.value.needed, e.value.running) == (257, 252)


def test_an_unknown_version_refuses_nothing_for_its_version() -> None:
    refuse([Directive.of("PrivatePIDs", True)], HostFacts())


def test_the_ex_bus_properties_are_only_observed_where_they_exist() -> None:
    spec = DIRECTIVES["PrivateUsers"]
    assert spec.bus_names_at(252) == ("PrivateUsers",)
    assert spec.bus_names_at(257) == ("PrivateUsers", "PrivateUsersEx")


@pytest.mark.parametrize("layout", ["hybrid", "legacy"])
@pytest.mark.parametrize("value", ["private", "strict"])
def test_private_cgroups_are_refused_where_systemd_would_quietly_drop_them(
    layout: str, value: str
) -> None:
    with pytest.raises(UnenforceableDirectiveError) as e:
        refuse([Directive.of("ProtectControlGroups", value)], HostFacts(257, layout))
    assert e.value.reason and layout in e.value.reason
    assert "ProtectControlGroups=yes" in e.value.remedy  # what holds instead
    assert e.value.needed is None
    refuse([Directive.of("ProtectControlGroups", value)], HostFacts(257, "unified"))
    refuse([Directive.of("ProtectControlGroups", True)], HostFacts(257, layout))


def test_hidden_processes_get_a_pid_namespace_where_the_manager_has_one() -> None:
    asked = [Directive.of("ProtectProc", "invisible")]
    added, notes = stronger(asked, HostFacts(257, "hybrid"))
    assert added == [Directive.of("PrivatePIDs", True)]
    assert "PrivatePIDs=yes" in notes[0] and "257" in notes[0]
    added, notes = stronger(asked, HostFacts(254, "hybrid"))
    assert added == []
    assert "without PrivatePIDs=" in notes[0] and "254" in notes[0]


def test_a_pid_namespace_set_by_the_user_is_left_as_it_is() -> None:
    asked = [Directive.of("ProtectProc", "invisible"), Directive.of("PrivatePIDs", False)]
    assert stronger(asked, HostFacts(257, "unified")) == ([], [])
    assert stronger([Directive.of("ProtectProc", "noaccess")], HostFacts(257, "unified")) == (
        [],
        [],
    )


# -- one record of the host's facts, read by both rule sets -----------------------------

_BPF = frozenset({"+BPF_FRAMEWORK"})


def test_an_unknown_cgroup_layout_refuses_nothing_by_layout_in_either_rule_set() -> None:
    unknown = HostFacts(257, features=_BPF)
    assert unknown.cgroup_layout == ""
    refuse([Directive.of("ProtectControlGroups", "private")], unknown)
    assert unenforceable(["SocketBindDeny", "IPAddressDeny"], unknown) == []
    # A known hybrid layout refuses in both.
    hybrid = attrs.evolve(unknown, cgroup_layout="hybrid")
    with pytest.raises(UnenforceableDirectiveError):
        refuse([Directive.of("ProtectControlGroups", "private")], hybrid)
    assert [n for n, _ in unenforceable(["SocketBindDeny"], hybrid)] == ["SocketBindDeny"]


def test_unknown_build_features_meet_no_feature_requirement() -> None:
    assert [n for n, _ in unenforceable(["SocketBindDeny"], HostFacts(252, "unified"))] == [
        "SocketBindDeny"
    ]


def test_a_directive_the_host_cannot_enforce_is_refused_unless_accepted() -> None:
    asked = [Directive.of("SocketBindDeny", "any"), Directive.of("CPUQuota", "20%")]
    no_bpf = HostFacts(252, "hybrid")
    with pytest.raises(UnenforceableDirectiveError) as e:
        refuse_unenforceable(asked, no_bpf)
    assert [r[0] for r in e.value.refused] == ["SocketBindDeny"]
    assert "this host" in str(e.value)
    assert "accept_unenforced=['SocketBindDeny']" in e.value.remedy
    refuse_unenforceable(asked, no_bpf, ("SocketBindDeny",))
    refuse_unenforceable(asked, no_bpf, True)
    refuse_unenforceable(asked, HostFacts(252, "unified", _BPF))


class _Manager:
    """A manager as host_facts sees it: an address and two properties."""

    def __init__(self, address: str, version: str) -> None:
        self.address, self.version, self.asked = address, version, 0

    def manager_property(self, name: str) -> object:
        self.asked += name == "Features"
        return {"Version": self.version, "Features": "+PAM +BPF_FRAMEWORK"}[name]


def test_facts_are_learnt_once_per_manager_address_and_version() -> None:
    from sandboxed.runtime import facts

    facts.forget()
    try:
        first = _Manager("unix:path=/run/a", "252.38-1")
        got = facts.host_facts(first)
        assert (got.version, "+BPF_FRAMEWORK" in got.features) == (252, True)
        assert facts.host_facts(first) is got and first.asked == 1  # cached
        # Re-executed into another version at the same address: learnt anew.
        first.version = "257.9"
        assert facts.host_facts(first).version == 257 and first.asked == 2
        # Another manager: learnt anew.
        other = _Manager("unix:path=/run/b", "252.38-1")
        assert facts.host_facts(other) == got and other.asked == 1
    finally:
        facts.forget()


# -- a value that takes the containment baseline's place is never waived ---------------


def _plan(host: HostFacts, **options: object) -> list[tuple[str, str, object]]:
    from sandboxed.directives.options import OptionSet
    from sandboxed.runtime.plan import unit_plan

    return unit_plan(OptionSet.build(**options), host=host)[0]  # type: ignore[arg-type]


HYBRID_257 = HostFacts(version=257, cgroup_layout="hybrid")


@pytest.mark.parametrize(
    "accepted", [True, ["ProtectControlGroups"]], ids=["accept-all", "accept-the-directive"]
)
def test_accept_unenforced_cannot_trade_the_baselines_cgroup_protection_for_a_dropped_one(
    accepted: object,
) -> None:
    # strict would replace the baseline's yes, and systemd turns it into no on hybrid
    # cgroups: accepting that would leave the cgroup tree writable.
    with pytest.raises(UnenforceableDirectiveError, match="quietly turns it into no"):
        _plan(HYBRID_257, ProtectControlGroups="strict", accept_unenforced=accepted)


def test_a_baseline_replacement_is_refused_where_the_cgroup_layout_could_not_be_read() -> None:
    with pytest.raises(UnenforceableDirectiveError, match="could not be read"):
        _plan(HostFacts(version=257), ProtectControlGroupsEx="strict")


def test_without_the_baseline_accepting_or_an_unread_layout_still_decide_as_before() -> None:
    # Nothing of the baseline is at stake: the user's own choice, as documented.
    unread = _plan(HostFacts(version=257), ProtectControlGroups="strict", containment=False)
    assert ("ProtectControlGroupsEx", "s", "strict") in unread
    accepted = _plan(
        HYBRID_257, ProtectControlGroups="strict", containment=False, accept_unenforced=True
    )
    assert ("ProtectControlGroupsEx", "s", "strict") in accepted


def test_on_unified_cgroups_strict_takes_the_baselines_place() -> None:
    props = _plan(HostFacts(version=257, cgroup_layout="unified"), ProtectControlGroups="strict")
    assert ("ProtectControlGroupsEx", "s", "strict") in props
    assert not any(name == "ProtectControlGroups" for name, _sig, _v in props)
