"""Version-aware sandboxes against the real manager: refused where it lacks a directive,
stronger where it has one. Runs on every systemd of the CI matrix (252, 254, 257); each
test asserts what that version must do, so none is skipped on the others."""

from __future__ import annotations

from typing import Any

import pytest

from sandboxed import ConflictingDirectivesError, Hardened, UnenforceableDirectiveError, sandboxed
from sandboxed.systemd.cgroups import cgroup_mounts

pytestmark = pytest.mark.systemd


def proc1_comm() -> str:
    """What the sandbox sees as PID 1: the manager, its own supervisor, or nothing."""
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip()
    except OSError as e:
        return f"hidden ({type(e).__name__})"


def proc1_and_pid_namespace() -> tuple[str, str]:
    import os

    return proc1_comm(), os.readlink("/proc/self/ns/pid")


def pid_count() -> int:
    import os

    return sum(1 for p in os.listdir("/proc") if p.isdigit())


@pytest.fixture(scope="module")
def running(systemd: Any) -> int:
    return int(systemd.client().version_number)


def test_a_directive_the_manager_lacks_is_refused_before_any_unit_starts(running: int) -> None:
    name, value, needed = (
        ("PrivatePIDs", True, 257) if running < 257 else ("ProtectHostname", "private", 258)
    )
    fn = sandboxed(**{name: value})(proc1_comm)
    with pytest.raises(UnenforceableDirectiveError) as e:
        fn()
    assert (e.value.directive, e.value.needed, e.value.running) == (name, needed, running)
    assert f"needs systemd {needed}" in str(e.value)
    assert f"systemd {running} cannot hold" in str(e.value)
    assert fn.sandbox.unit_name is None  # no unit was started


def test_private_pids_gives_the_sandbox_a_pid_namespace_of_its_own(running: int) -> None:
    # Control: without it the unit sees the manager as PID 1 (and all of its processes).
    assert sandboxed()(proc1_comm)() == "systemd"
    boxed = sandboxed(PrivatePIDs=True)
    if running < 257:
        with pytest.raises(UnenforceableDirectiveError):
            boxed(proc1_comm)()
        return
    assert boxed(proc1_comm)() != "systemd"
    assert boxed(pid_count)() < sandboxed()(pid_count)()


def test_hardened_takes_private_pids_where_the_manager_has_it_and_says_so(running: int) -> None:
    fn = sandboxed(Hardened)(proc1_and_pid_namespace)
    seen, pid_ns = fn()
    described = fn.describe()
    assert f"systemd {running}" in described
    if running >= 257:
        assert "with PrivatePIDs=yes" in described
        # PID 1 is its own supervisor (non-dumpable, so ProtectProc= may hide it too),
        # never the manager, in a PID namespace that a plain sandbox does not share.
        assert seen != "systemd"
        assert pid_ns != sandboxed()(proc1_and_pid_namespace)()[1]
    else:
        assert "without PrivatePIDs=" in described
        assert seen.startswith("hidden")  # ProtectProc=invisible hides the manager


def test_private_cgroups_are_refused_where_systemd_would_drop_them(running: int) -> None:
    layout = cgroup_mounts()[0]
    # The containment baseline sets ProtectControlGroups=yes; this asks for more.
    fn = sandboxed(ProtectControlGroups="private", containment=False)(proc1_comm)
    if running >= 257 and layout == "unified":
        assert fn() == "systemd"
        return
    with pytest.raises(UnenforceableDirectiveError) as e:
        fn()
    if running >= 257:
        assert layout in e.value.reason and "ProtectControlGroups=yes" in e.value.remedy
    else:
        assert e.value.needed == 257
    assert fn.sandbox.unit_name is None


def cgroup_view() -> tuple[str, str, str]:
    """The sandbox's cgroup namespace, its own cgroup as it sees it, and /sys/fs/cgroup's
    mount options."""
    import os

    with open("/proc/self/cgroup") as f:
        own = f.read().strip().splitlines()[-1]
    with open("/proc/self/mounts") as f:
        opts = next((line.split()[3] for line in f if line.split()[1] == "/sys/fs/cgroup"), "")
    return os.readlink("/proc/self/ns/cgroup"), own, opts


def test_strict_cgroups_are_taken_over_the_baselines_yes_where_they_hold(running: int) -> None:
    layout = cgroup_mounts()[0]
    # Stronger than the baseline's ProtectControlGroups=yes: not a conflict with it, so
    # the sandbox builds; what decides is whether this manager and layout can hold it.
    fn = sandboxed(ProtectControlGroups="strict")(cgroup_view)
    if running >= 257 and layout == "unified":
        ns, own, opts = fn()
        assert ns != cgroup_view()[0]  # a cgroup namespace of its own
        assert own == "0::/"  # rooted at its unit: the rest of the tree is not seen
        assert "ro" in opts.split(",")
        return
    with pytest.raises(UnenforceableDirectiveError) as e:
        fn()
    assert e.value.directive == "ProtectControlGroups"
    if running >= 257:
        assert layout in e.value.reason
    else:
        assert (e.value.needed, e.value.running) == (257, running)
    assert fn.sandbox.unit_name is None


def user_namespace() -> str:
    import os

    return os.readlink("/proc/self/ns/user")


def test_the_string_spelling_of_private_users_is_one_setting_with_the_baseline(
    running: int,
) -> None:
    # Sent beside the baseline's PrivateUsers=yes, PrivateUsersEx=no was applied last
    # by systemd 257 (measured): the unit ran in the host's user namespace.
    with pytest.raises(ConflictingDirectivesError):
        sandboxed(PrivateUsersEx="no")
    # One setting, sent in its own spelling: PrivateUsers b, which every version has
    # (252 and 254 reject the Ex property itself), so this holds on each of them.
    fn = sandboxed(PrivateUsersEx="self")(user_namespace)
    sent = [p[0] for p in fn.sandbox.base_properties() if p[0].startswith("PrivateUsers")]
    assert sent == ["PrivateUsers"]  # one property: the baseline's own
    assert fn() != user_namespace()


def tmp_listing() -> list[str]:
    import os

    return sorted(os.listdir("/tmp"))


def test_a_presets_private_tmp_holds_against_the_string_spelling(running: int) -> None:
    import tempfile

    from sandboxed import Preset, ReadOnly

    # Control: a file of the host's /tmp, seen where /tmp is not private.
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="sandboxed-spelling-") as marker:
        name = marker.name.rsplit("/", 1)[1]
        assert name in sandboxed(PrivateTmp=False)(tmp_listing)()
        # ReadOnly's PrivateTmp=yes with the Ex spelling of the same value: one property,
        # sent as PrivateTmp b, so 252 and 254 take it too.
        fn = sandboxed(ReadOnly, PrivateTmpEx="yes")(tmp_listing)
        sent = [p[0] for p in fn.sandbox.base_properties() if p[0].startswith("PrivateTmp")]
        assert sent == ["PrivateTmp"]
        assert name not in fn()
        # The other value: the keyword overrides the preset, and describe() says what the
        # unit gets (257 applied the later of both properties sent: the host's /tmp under a
        # described PrivateTmp=yes).
        fn = sandboxed(ReadOnly, PrivateTmpEx="no")(tmp_listing)
        assert "PrivateTmp=no  [keyword]" in fn.sandbox.options.describe()
        assert name in fn()
        # The other value in the other spelling: a conflict, not a quietly shared /tmp.
        with pytest.raises(ConflictingDirectivesError):
            sandboxed(ReadOnly | Preset.define("Mine", {"PrivateTmpEx": "no"}))
