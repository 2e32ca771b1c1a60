"""Failures say what happened (issue 16), against a real systemd.

A unit that cannot start names systemd's cause (``200/CHDIR``...) in its words
and ours; what can be checked on this host (users, groups, paths) is refused
before any unit starts; memory below the interpreter's floor and
``RuntimeMaxSec=`` give errors that blame the right thing.
"""

from __future__ import annotations

import grp
from typing import Any

import pytest
from tasks import nap, square

from sandboxed import (
    Hardened,
    InvalidDirectiveValueError,
    SandboxError,
    UnitFailedError,
    WorkerDiedError,
    sandboxed,
)

pytestmark = pytest.mark.systemd


def unit_names(client: Any) -> set[str]:
    return {u[0] for u in client.list_units(["sandboxed-*"])}


def no_such_group() -> str:
    name = "nosuchgroup16"
    with pytest.raises(KeyError):
        grp.getgrnam(name)
    return name


# -- refused when the sandbox is built, before any unit starts ------------------------------


def test_an_unknown_user_is_refused_before_any_unit_starts(systemd: Any, client: Any) -> None:
    before = unit_names(client)
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(User="nosuchuser")(square)(3)
    assert info.value.directive == "User"
    assert "no user 'nosuchuser' on this host" in str(info.value)
    assert "DynamicUser=yes" in str(info.value)
    assert unit_names(client) == before


def test_an_unknown_user_is_accepted_with_dynamic_user(systemd: Any) -> None:
    # Hardened has DynamicUser=yes: systemd allocates the user, so no host user is needed.
    assert sandboxed(Hardened, User="sbx16dyn")(square)(4) == 16


def test_an_unknown_group_is_refused_and_names_the_hosts_groups(systemd: Any) -> None:
    name = no_such_group()
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(Group=name)(square)(3)
    assert info.value.directive == "Group"
    assert f"no group {name!r} on this host" in str(info.value)


def test_group_nobody_on_a_host_without_it_suggests_nogroup(systemd: Any) -> None:
    try:
        grp.getgrnam("nobody")
    except KeyError:
        pass
    else:
        pytest.skip("this host has a group called nobody")
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(User="nobody", Group="nobody")(square)(3)
    assert "'nogroup'" in str(info.value)


def test_a_missing_read_write_path_is_refused_with_the_optional_spelling(systemd: Any) -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(ReadWritePaths="/nonexistent16/x")(square)(3)
    assert info.value.directive == "ReadWritePaths"
    assert "/nonexistent16/x does not exist" in str(info.value)
    assert "-/nonexistent16/x" in str(info.value)


def test_a_missing_path_prefixed_with_a_dash_is_accepted(systemd: Any) -> None:
    assert sandboxed(ReadWritePaths="-/nonexistent16/x")(square)(5) == 25


def test_a_missing_working_directory_is_refused(systemd: Any) -> None:
    with pytest.raises(InvalidDirectiveValueError) as info:
        sandboxed(WorkingDirectory="/nonexistent16")(square)(3)
    assert info.value.directive == "WorkingDirectory"
    assert "/nonexistent16 does not exist" in str(info.value)


def test_a_unit_that_fails_to_start_names_systemds_exit_status(
    systemd: Any, client: Any, tmp_path: Any
) -> None:
    # A directory the host has but the sandbox's user cannot enter: only the start can fail.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    before = unit_names(client)
    with pytest.raises(UnitFailedError) as info:
        sandboxed(User="nobody", WorkingDirectory=str(locked))(square)(3)
    text = str(info.value)
    assert "200/CHDIR" in text
    assert "result 'success'" not in text
    assert info.value.exit_status == 200
    assert unit_names(client) == before


def test_memory_max_below_the_interpreters_floor_says_the_worker_could_not_start(
    systemd: Any,
) -> None:
    with pytest.raises(SandboxError) as info:
        sandboxed(MemoryMax="6M", MemorySwapMax=0)(square)(3)
    text = str(info.value)
    assert "could not start within MemoryMax=" in text
    assert "MiB" in text
    assert "the call" not in text.split("could not start")[0]


def test_a_call_killed_by_runtime_max_sec_names_it(systemd: Any) -> None:
    fn = sandboxed(RuntimeMaxSec=2)(nap)
    with pytest.raises(WorkerDiedError) as info:
        fn(30)
    assert "RuntimeMaxSec=" in str(info.value)
