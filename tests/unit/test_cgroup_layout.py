"""Cgroup layout detection from /proc/self/mountinfo (pure: synthetic mount tables)."""

from __future__ import annotations

import pytest

from sandboxed._errors import EmbeddedManagerError
from sandboxed.systemd.cgroups import cgroup_mounts


def table(*lines: str) -> list[list[str]]:
    return [line.split() for line in lines]


HYBRID = table(
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
    "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
    "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate",
)

UNIFIED = table(
    "22 27 0:21 / /proc rw - proc proc rw",
    "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
)

LEGACY = table(
    "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd",
)


def test_hybrid_layout_keeps_every_v1_controller_and_the_unified_hierarchy() -> None:
    layout, mounts = cgroup_mounts(HYBRID)
    assert layout == "hybrid"
    by_name = {m.name: m for m in mounts}
    assert set(by_name) == {"cpu,cpuacct", "memory", "systemd", "unified"}
    assert by_name["cpu,cpuacct"].controllers == ("cpu", "cpuacct")
    assert by_name["systemd"].options == "xattr,name=systemd"
    assert by_name["unified"].type == "cgroup2"
    assert by_name["unified"].options == "nsdelegate"


def test_pure_cgroup2_layout_is_unified_with_one_mount_at_the_top() -> None:
    layout, mounts = cgroup_mounts(UNIFIED)
    assert layout == "unified"
    assert [(m.name, m.type) for m in mounts] == [("", "cgroup2")]
    assert mounts[0].options == "nsdelegate,memory_recursiveprot"


def test_v1_only_with_a_systemd_hierarchy_is_legacy() -> None:
    layout, _ = cgroup_mounts(LEGACY)
    assert layout == "legacy"


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        (table("22 27 0:21 / /proc rw - proc proc rw"), "nothing mounted at /sys/fs/cgroup"),
        (
            table(
                "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw",
                "32 31 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids",
            ),
            "without a name=systemd hierarchy",
        ),
    ],
    ids=["no-cgroups", "v1-without-systemd"],
)
def test_an_unsupported_layout_is_named_in_the_error(lines: list[list[str]], named: str) -> None:
    with pytest.raises(EmbeddedManagerError, match=named) as info:
        cgroup_mounts(lines)
    assert "supported:" in str(info.value)


def test_this_machines_layout_is_supported() -> None:
    layout, mounts = cgroup_mounts()
    assert layout in ("unified", "hybrid", "legacy")
    assert mounts
