"""Every directive of issue 4, probed from inside a real unit.

The worker is the unit's own process, started by systemd: so each directive
applies to the function's code. Each test runs a probe from ``probes`` in a
sandbox and asserts the directive's effect; where the effect could be there
anyway, a baseline sandbox without the directive shows the contrast.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import probes
import pytest

from sandboxed import SandboxError, sandboxed
from sandboxed import shutdown as sandboxed_shutdown

pytestmark = pytest.mark.systemd

#: One unit carries most directives: starting a unit per directive would only cost time.
PROBED: dict[str, Any] = {
    "User": "nobody",
    "NoNewPrivileges": True,
    "SystemCallFilter": "~getpriority",
    "SystemCallErrorNumber": "EPERM",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "LimitNOFILE": 123,
    "Environment": "SBX_PROBE=from-the-directive",
    "WorkingDirectory": "/usr/share",
    "UMask": "0077",
    "PrivateNetwork": True,
    "ProtectSystem": "strict",
    "PrivateTmp": True,
}
#: Root, since as nobody a write to /etc fails anyway (EACCES, not EROFS).
READ_ONLY_ROOT: dict[str, Any] = {"ProtectSystem": "strict", "PrivateTmp": True}
BUDGET: dict[str, Any] = {"CPUQuota": "30%", "MemoryMax": "64M", "MemorySwapMax": 0}

CAP_NET_BIND_SERVICE = 1 << 10


def in_probed(fn: Callable[..., Any]) -> Callable[..., Any]:
    return sandboxed(**PROBED)(fn)


def in_baseline(fn: Callable[..., Any]) -> Callable[..., Any]:
    # The control: a unit without the directive under test, and without the containment
    # baseline either (it sets NoNewPrivileges=, a system call filter, ...).
    return sandboxed(containment=False)(fn)


@pytest.fixture(scope="module", autouse=True)
def _units(systemd: Any) -> Iterator[None]:
    yield
    sandboxed_shutdown()


def test_no_new_privileges_sets_no_new_privs_in_the_function() -> None:
    assert in_probed(probes.status_fields)("NoNewPrivs") == {"NoNewPrivs": "1"}
    assert in_baseline(probes.status_fields)("NoNewPrivs") == {"NoNewPrivs": "0"}


def test_system_call_filter_makes_a_filtered_syscall_fail() -> None:
    assert in_probed(probes.status_fields)("Seccomp")["Seccomp"] == "2"
    assert in_probed(probes.getpriority_errno)() == errno.EPERM
    assert in_baseline(probes.getpriority_errno)() == 0


def test_capability_bounding_set_limits_capbnd() -> None:
    capbnd = int(in_probed(probes.status_fields)("CapBnd")["CapBnd"], 16)
    assert capbnd == CAP_NET_BIND_SERVICE
    assert int(in_baseline(probes.status_fields)("CapBnd")["CapBnd"], 16) != capbnd


def test_limit_nofile_sets_the_rlimit() -> None:
    assert in_probed(probes.nofile_limit)() == (123, 123)


def test_environment_is_visible_to_the_function() -> None:
    assert in_probed(probes.environment)()["SBX_PROBE"] == "from-the-directive"


def test_working_directory_is_the_functions_cwd() -> None:
    assert in_probed(probes.cwd)() == "/usr/share"


def test_umask_applies_to_files_the_function_creates() -> None:
    umask, mode = in_probed(probes.umask_and_created_mode)("/tmp")
    assert umask == 0o077
    assert mode == 0o600


def test_user_runs_the_function_as_that_user() -> None:
    ident = in_probed(probes.identity)()
    assert (ident["uid"], ident["euid"]) == (65534, 65534)


def test_private_network_leaves_only_loopback() -> None:
    assert in_probed(probes.interfaces)() == ["lo"]
    assert len(in_baseline(probes.interfaces)()) > 1


def test_protect_system_strict_makes_usr_and_etc_read_only() -> None:
    probe = sandboxed(**READ_ONLY_ROOT)(probes.write_errno)
    name = f"sbx-probe-{uuid.uuid4().hex}"
    assert probe(f"/usr/{name}") == errno.EROFS
    assert probe(f"/etc/{name}") == errno.EROFS
    assert sandboxed(**READ_ONLY_ROOT)(probes.open_for_append_errno)("/etc/hostname") in (
        errno.EROFS,
        errno.ENOENT,
    )
    # ... while its private /tmp stays writable, and root is root.
    assert probe(f"/tmp/{name}") == 0


def test_private_tmp_hides_the_hosts_tmp() -> None:
    marker = f"/tmp/sbx-host-marker-{uuid.uuid4().hex}"
    with open(marker, "w") as f:
        f.write("host")
    try:
        assert in_probed(probes.exists)(marker) is False
        assert in_baseline(probes.exists)(marker) is True
        name = f"sbx-inside-{uuid.uuid4().hex}"
        assert in_probed(probes.write_then_read_tmp)(name, "inside") == "inside"
        assert not os.path.exists(f"/tmp/{name}")
    finally:
        os.unlink(marker)


def test_cpu_quota_holds_a_busy_loop_to_the_quota() -> None:
    share = sandboxed(**BUDGET)(probes.cpu_share)(1.5)
    assert 0.30 * 0.85 <= share <= 0.30 * 1.15, share


def test_memory_max_kills_the_call_that_allocates_beyond_it() -> None:
    allocate = sandboxed(**BUDGET)(probes.allocate)
    assert allocate(8) == 8 << 20
    with pytest.raises(SandboxError) as info:
        allocate(256)
    assert isinstance(info.value, MemoryError), repr(info.value)
    assert "MemoryMax" in str(info.value)
    # Only that call failed: the unit serves the next one.
    assert allocate(8) == 8 << 20


def test_the_worker_is_a_child_of_the_units_main_process_not_of_the_caller() -> None:
    probe = in_probed(probes.identity)
    ident = probe()
    unit = probe.sandbox.unit_name
    assert unit is not None and unit.startswith("sandboxed-")
    assert f"/{unit}" in ident["cgroup"]
    # The unit's main process is the supervisor systemd started from our ExecStart.
    assert any(b"sandboxed.worker.main" in arg for arg in ident["parent_cmdline"])
    assert ident["pid"] != os.getpid()


def test_the_worker_holds_no_fd_of_the_callers_beyond_its_channel() -> None:
    planted = f"/tmp/sbx-planted-{uuid.uuid4().hex}"
    fd = os.open(planted, os.O_CREAT | os.O_RDWR, 0o644)
    os.set_inheritable(fd, True)
    try:
        probe = sandboxed(PrivateTmp=False)(probes.open_fds)
        fds = probe()
    finally:
        os.close(fd)
        os.unlink(planted)
    assert planted not in fds.values()
    assert fds[0] == "/dev/null"
    assert fds[1].startswith("pipe:") and fds[2].startswith("pipe:")
    sockets = [fd for fd, t in fds.items() if t.startswith("socket:")]
    assert len(sockets) == 1, fds  # its own channel to the caller
    others = {fd: t for fd, t in fds.items() if fd > 2 and fd not in sockets}
    # The rest are the two pipes the worker made to capture its stdout and stderr.
    assert len(others) == 2 and all(t.startswith("pipe:") for t in others.values()), fds


def test_the_worker_sees_no_caller_environment_variable_unless_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SBX_CALLER_SECRET", "hunter2")
    env = sandboxed(PrivateTmp=True)(probes.environment)()
    assert "SBX_CALLER_SECRET" not in env
    assert "hunter2" not in env.values()
    monkeypatch.setenv("SBX_CALLER_PASSED", "given")
    passed = sandboxed(PrivateTmp=True, env=["SBX_CALLER_PASSED"])(probes.environment)
    got = passed()
    assert got["SBX_CALLER_PASSED"] == "given"
    assert "SBX_CALLER_SECRET" not in got
