"""One sandbox per tenant: each tenant's code sees only its own data, within its own budget.

A multi-tenant service runs the same function for many customers. Giving each
tenant its own option set gives each its own unit (sandboxed keys units by
option set), so tenants do not share processes, /tmp, or budgets:

- ``TemporaryFileSystem=<base>:ro`` hides every tenant's data directory, and
  ``BindPaths=<base>/<tenant>`` brings back exactly the tenant's own, writable;
- ``ReadOnly`` makes the rest of the system read-only, ``NoNetwork`` cuts the
  network, and the code runs as ``nobody``: even with one uid for all, another
  tenant's directory is simply not in a sandbox's mount namespace;
- ``CPUQuota=``/``MemoryMax=`` come from the tenant's plan.

Run: python recipes/per_tenant.py
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from sandboxed import NoNetwork, ReadOnly, sandboxed

PLANS = {
    "free": {"CPUQuota": 0.2, "MemoryMax": "128M"},
    "pro": {"CPUQuota": 1.0, "MemoryMax": "1G"},
}
TENANTS = {"acme": "pro", "globex": "free", "initech": "free"}


def report(tenant: str, base: str) -> dict[str, Any]:
    """The tenant's job: count its files, append to its log. Runs in the tenant's sandbox."""
    own = os.path.join(base, tenant)
    with open(os.path.join(own, "log.txt"), "a") as f:
        f.write("report ran\n")
    others = {}
    for other in TENANTS:
        if other != tenant:
            others[other] = os.path.exists(os.path.join(base, other))
    return {"tenant": tenant, "files": sorted(os.listdir(own)), "sees_others": others}


def sandbox_for(tenant: str, base: str) -> Callable[..., dict[str, Any]]:
    """The tenant's sandboxed version of ``report`` (one unit per tenant)."""
    plan = PLANS[TENANTS[tenant]]
    return sandboxed(
        NoNetwork,
        ReadOnly,
        User="nobody",
        TemporaryFileSystem=f"{base}:ro",
        BindPaths=os.path.join(base, tenant),
        **plan,
    )(report)


def main() -> None:
    # Where a service keeps its state (not /tmp: ReadOnly gives each sandbox a private one).
    base = tempfile.mkdtemp(prefix="sandboxed-tenants-", dir="/var/lib")
    os.chmod(base, 0o755)
    nobody = pwd.getpwnam("nobody")
    try:
        for tenant in TENANTS:
            own = os.path.join(base, tenant)
            os.mkdir(own, 0o700)
            with open(os.path.join(own, "data.csv"), "w") as f:
                f.write("x\n")
            os.chown(own, nobody.pw_uid, nobody.pw_gid)
        jobs = {tenant: sandbox_for(tenant, base) for tenant in TENANTS}
        for tenant, job in jobs.items():
            result = job(tenant, base)
            print(f"{tenant:>8} ({TENANTS[tenant]}): {result}  unit {job.sandbox.unit_name}")
            assert result["files"] == ["data.csv", "log.txt"]
            assert not any(result["sees_others"].values())
        units = {job.sandbox.unit_name for job in jobs.values()}
        assert len(units) == len(TENANTS), "one unit per tenant"
        with open(os.path.join(base, "acme", "log.txt")) as f:
            assert f.read() == "report ran\n"  # the write reached the tenant's real directory
        print(f"{len(units)} tenants, {len(units)} units, none sees another's data")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
