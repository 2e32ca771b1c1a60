"""The unit's start-up imports the standard library and sandboxed's wire/ and worker/ only.

The worker's cold start is paid on every new sandbox, and everything it imports
runs before user code in the sandbox: the caller's libraries (attrs, wrapt,
jeepney) and heavy standard modules (typing, asyncio) must stay out of it.
The boot runs as systemd runs it: ``python -S -s -B -c WORKER_BOOT ...``.
"""

from __future__ import annotations

import subprocess
import sys

from sandboxed.runtime import launch

FORBIDDEN = (
    "attrs",
    "wrapt",
    "jeepney",
    "typing",
    "asyncio",
    "sandboxed.directives",
    "sandboxed.runtime",
    "sandboxed.systemd",
    "sandboxed.api",
    "sandboxed.cli",
)


def _modules_after_boot(extra: str = "") -> set[str]:
    """The modules loaded once the supervisor and what every worker needs are imported."""
    entry = "w.site(sys.argv[3])\nw.main()"
    assert entry in launch.WORKER_BOOT, "the boot program changed: update this test with it"
    # Everything the boot does, and what the supervisor imports for its workers, but
    # instead of serving a control socket, print what is loaded.
    code = launch.WORKER_BOOT.replace(
        entry,
        "w.site(sys.argv[3])\nimport sandboxed.worker.serve,sandboxed.wire.serial,"
        "sandboxed.worker.batch;" + (extra or "pass") + ";print('\\n'.join(sorted(sys.modules)))",
    )
    path = "\0".join(sys.path).encode().hex()
    argv = [
        sys.executable,
        "-S",
        "-s",
        "-B",
        "-c",
        code,
        path,
        launch.PACKAGE_DIR,
        launch._site_setup(),
    ]  # noqa: SLF001 - the real site argument of this interpreter
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_the_worker_boot_loads_no_caller_library_and_no_heavy_stdlib_module() -> None:
    loaded = _modules_after_boot()
    assert {
        "sandboxed.worker.supervisor",
        "sandboxed.worker.serve",
        "sandboxed.wire.codec",
    } <= loaded
    leaked = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN))
    assert leaked == []


def test_the_check_sees_a_caller_library_that_the_boot_would_load() -> None:
    # The control: were the boot to import attrs, the check above would see it.
    assert "attrs" in _modules_after_boot(extra="import attrs")
