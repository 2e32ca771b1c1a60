"""The host path, tested for real: the suite again, from where PID 1 is systemd.

On most users' machines PID 1 is systemd, and sandboxed talks to it as root over
``/run/systemd/private`` (the system bus otherwise), reads unit cgroups under the
host's ``/sys/fs/cgroup`` and runs the host's ``systemctl`` with no prefix, next
to the host's own units. This machine's PID 1 is not systemd, so the ordinary
test run never takes that path. This pass boots the embedded manager and runs
pytest inside its mount and PID namespaces (``nsenter``), where PID 1 is that
systemd: ``locate()`` takes the host path and everything it implies. The tests
run outside any unit, as a user's program does.

    scripts/host_path.py                  tests/systemd, from the host path
    scripts/host_path.py tests/x.py -k y  other pytest arguments

The pass fails if the run does not take the host path (the conftest checks it
with ``SANDBOXED_EXPECT_HOST_PATH=1``), if pytest fails, or if sandbox units are
left in the manager after the run. Its manager lives in its own state directory
(``$SANDBOXED_EMBEDDED_DIR``, default ``/run/sandboxed/host-path``) and is
stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def main(args: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from sandboxed.systemd import embedded
    from sandboxed.systemd.bus import ManagerClient

    directory = Path(os.environ.get("SANDBOXED_EMBEDDED_DIR", "/run/sandboxed/host-path"))
    t0 = time.monotonic()
    m = embedded.start(directory)
    print(f"host-path pass: systemd is PID 1 of host pid {m.pid}'s namespaces", flush=True)
    try:
        argv = [
            "nsenter",
            f"--mount=/proc/{m.pid}/ns/mnt",
            f"--pid=/proc/{m.pid}/ns/pid",
            f"--wd={ROOT}",
            "--",
            "env",
            "-u",
            "SANDBOXED_MANAGER",
            "-u",
            "SANDBOXED_EMBEDDED_DIR",
            # Never fall back to an embedded manager of its own in there.
            "SANDBOXED_EMBEDDED=0",
            "SANDBOXED_EXPECT_HOST_PATH=1",
            PY,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *(args or ["tests/systemd"]),
        ]
        rc = subprocess.call(argv, cwd=ROOT)
        client = ManagerClient(m.address)
        try:
            deadline = time.monotonic() + 15  # units still stopping at the run's exit
            while True:
                left = [
                    str(u[0])
                    for u in client.list_units(["sandboxed-*.service"])
                    if str(u[3]) not in ("inactive", "failed")
                ]
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            client.close()
        if left:
            print("sandbox units left behind by the run:\n  " + "\n  ".join(left), flush=True)
            rc = rc or 1
    finally:
        embedded.stop(directory, force=True)
    print(f"host-path pass: {'ok' if rc == 0 else 'FAILED'} in {time.monotonic() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main(sys.argv[1:]))
