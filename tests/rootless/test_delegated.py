"""Resource controls in rootless mode where the controller *is* delegated to the user.

On this hybrid host systemd never delegates a cgroup v1 controller to a user
manager, so the fixture does it by hand (the memory and pids hierarchies of
``user@UID.service`` handed to the user): what pure cgroup2 desktops get from
``Delegate=``. Then the budgets are accepted and hold, probed from inside, while
``CPUQuota=`` (cpu not handed over) is still refused.
"""

from __future__ import annotations

import pytest
from rootless_kit import UserSession

pytestmark = pytest.mark.systemd


def test_memory_max_holds_where_memory_is_delegated(delegated_user: UserSession) -> None:
    r = delegated_user.run(
        """
from sandboxed import sandboxed, SandboxMemoryError
def hog():
    b = bytearray(256 * 2**20)
    b[::4096] = b"x" * len(b[::4096])
    return "allocated"
try:
    result = sandboxed(MemoryMax="64M", MemorySwapMax=0)(hog)()
except SandboxMemoryError as e:
    result = "oom: " + str(e)
"""
    )
    assert str(r.result).startswith("oom: "), r.result


def test_tasks_max_holds_where_pids_is_delegated(delegated_user: UserSession) -> None:
    r = delegated_user.run(
        """
from sandboxed import sandboxed
def spawn():
    import threading, time
    started = 0
    try:
        for _ in range(64):
            threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
            started += 1
    except RuntimeError:
        pass
    return started
result = sandboxed(TasksMax=16)(spawn)()
"""
    )
    assert r.result < 16


def test_an_undelegated_controller_is_still_refused(delegated_user: UserSession) -> None:
    r = delegated_user.run(
        """
from sandboxed import sandboxed
result = sandboxed(CPUQuota=0.2)(abs)(-1)
"""
    )
    err = r.error
    assert err["type"] == "UnenforceableDirectiveError"
    assert "cpu controller is not delegated" in err["message"]
