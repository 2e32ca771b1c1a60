"""The rootless form of a sandbox: pure rules, no bus (tests/rootless/ probes them for real)."""

from __future__ import annotations

import pytest

from sandboxed.directives.directive import DIRECTIVES, Directive
from sandboxed.directives.options import OptionSet
from sandboxed.directives.presets import Hardened, NoNetwork, ReadOnly
from sandboxed.directives.rootless import (
    CONTROLLER,
    NEEDS_BPF,
    NEEDS_PRIVATE_USERS,
    NEEDS_ROOT,
    NOT_IN_USER_MANAGERS,
    UserManagerHost,
    rootless_form,
)

HYBRID = UserManagerHost(
    1000, "alice", 1000, "alice", frozenset(), "hybrid cgroups", "/run/user/1000"
)
DESKTOP = UserManagerHost(
    1000, "alice", 1000, "alice", frozenset({"cpu", "memory", "pids"}), "", "/run/user/1000"
)


def form(options: OptionSet, host: UserManagerHost = HYBRID):
    return rootless_form(options.directives, dict(options.origins), host)


def by_name(f) -> dict[str, Directive]:
    return {d.name: d for d in f.directives}


@pytest.mark.parametrize(
    "name",
    sorted(NEEDS_PRIVATE_USERS | NOT_IN_USER_MANAGERS | NEEDS_ROOT | NEEDS_BPF | set(CONTROLLER)),
)
def test_every_name_in_the_rules_is_a_directive_systemd_knows(name: str) -> None:
    if name == "RestrictFileSystems" and name not in DIRECTIVES:
        pytest.skip("not in this table's systemd version")
    assert name in DIRECTIVES


def test_every_rootless_sandbox_gets_private_users_a_hidden_runtime_dir_and_readonly_cgroups() -> (
    None
):
    d = by_name(form(OptionSet.build()))
    assert d["PrivateUsers"].value is True
    assert "-/run/user/1000" in str(d["InaccessiblePaths"])
    assert "-/sys/fs/cgroup" in str(d["ReadOnlyPaths"])


def test_namespace_presets_keep_all_their_directives() -> None:
    f = form(OptionSet.build(NoNetwork, ReadOnly))
    assert not f.refused
    d = by_name(f)
    for original in OptionSet.build(NoNetwork, ReadOnly).directives:
        if original.name == "InaccessiblePaths":
            for part in str(original).split():
                assert part.split("=", 1)[-1] in str(d["InaccessiblePaths"])
        else:
            assert d[original.name] == original


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"CPUQuota": 0.2}, "cpu controller is not delegated"),
        ({"MemoryMax": "64M"}, "memory controller is not delegated"),
        ({"TasksMax": 8}, "pids controller is not delegated"),
        ({"IOWeight": 50}, "io controller is not delegated"),
        ({"User": "nobody"}, "needs root"),
        ({"Group": "nogroup"}, "needs root"),
        ({"DynamicUser": True}, "needs root"),
        ({"ProtectProc": "invisible"}, "not available to user managers"),
        ({"RemoveIPC": True}, "not available to user managers"),
        ({"IPAddressDeny": "any"}, "BPF"),
        ({"PrivateUsers": False}, "PrivateUsers=yes"),
    ],
)
def test_what_a_user_manager_cannot_hold_is_refused_with_why(kw: dict, reason: str) -> None:
    # PrivateUsers=no is refused even earlier, by the containment baseline, unless that
    # is turned off: the rootless rule is tested on its own here.
    f = form(OptionSet.build(**kw, containment="PrivateUsers" not in kw))
    (name,) = kw
    assert [r.directive for r in f.refused] == [name]
    assert reason in f.refused[0].reason
    assert f.refused[0].remedy


def test_delegated_controllers_are_kept() -> None:
    f = form(OptionSet.build(CPUQuota=0.2, MemoryMax="64M", TasksMax=8), DESKTOP)
    assert not f.refused
    assert {"CPUQuota", "MemoryMax", "TasksMax"} <= set(by_name(f))


def test_unknown_delegation_refuses_rather_than_trusts() -> None:
    host = UserManagerHost(1000, "alice", 1000, "alice", None, "cannot see it", None)
    f = form(OptionSet.build(CPUQuota=0.2), host)
    assert f.refused and "cannot see it" in f.refused[0].reason


def test_the_callers_own_user_and_group_are_accepted() -> None:
    for kw in ({"User": "alice"}, {"User": "1000"}, {"Group": "alice"}):
        f = form(OptionSet.build(**kw))
        assert not f.refused
        assert "User" not in by_name(f) and "Group" not in by_name(f)


def test_settings_that_ask_for_nothing_are_not_refused() -> None:
    f = form(OptionSet.build(DynamicUser=False, ProtectProc="default", RemoveIPC=False))
    assert not f.refused


def test_hardened_has_a_rootless_form_that_says_what_changed() -> None:
    f = form(OptionSet.build(Hardened))
    assert not f.refused
    d = by_name(f)
    for gone in (
        "DynamicUser",
        "RemoveIPC",
        "ProtectProc",
        "ProcSubset",
        "IPAddressDeny",
        "ProtectControlGroups",
    ):
        assert gone not in d
    for kept in (
        "PrivateNetwork",
        "ProtectSystem",
        "SystemCallFilter",
        "NoNewPrivileges",
        "PrivateIPC",
        "CapabilityBoundingSet",
        "RestrictNamespaces",
    ):
        assert kept in d
    text = "\n".join(f.notes)
    for gone in ("DynamicUser", "RemoveIPC", "ProtectProc", "ProcSubset", "IPAddressDeny"):
        assert f"{gone}=" in text


def test_a_presets_hardening_asked_for_by_name_is_refused_not_dropped() -> None:
    f = form(OptionSet.build(Hardened, DynamicUser=True))
    assert [r.directive for r in f.refused] == ["DynamicUser"]


def test_ip_address_deny_is_only_dropped_where_private_network_holds_instead() -> None:
    from sandboxed.directives.presets import Preset

    p = Preset.define("Firewalled", {"IPAddressDeny": "any"})
    f = form(OptionSet.build(p))
    assert [r.directive for r in f.refused] == ["IPAddressDeny"]


def test_a_session_bus_outside_the_runtime_directory_is_hidden_too() -> None:
    import attrs

    host = attrs.evolve(HYBRID, sockets=("/run/user/1000/bus", "/tmp/dbus-abc"))
    d = by_name(rootless_form((), {}, host))
    hidden = str(d["InaccessiblePaths"])
    assert "-/tmp/dbus-abc" in hidden and "-/run/user/1000" in hidden
    assert "/run/user/1000/bus" not in hidden  # inside the runtime directory already


def test_device_policy_auto_asks_for_nothing() -> None:
    assert not form(OptionSet.build(DevicePolicy="auto")).refused
    assert form(OptionSet.build(DevicePolicy="closed")).refused
