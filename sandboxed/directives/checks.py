"""Directive values that systemd accepts over D-Bus but that cannot work for a sandbox.

These are caught when the option set is built (before any unit exists), because
otherwise they only show as a unit that fails to start, or a worker that dies,
with systemd's terse exit status. Pure: values in, errors out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sandboxed._errors import InvalidDirectiveValueError

#: The system call groups of systemd.exec(5) (``systemd-analyze syscall-filter``), up to 257.
SYSCALL_GROUPS: Final = frozenset(
    {
        "@default", "@aio", "@basic-io", "@chown", "@clock", "@cpu-emulation", "@debug",
        "@file-system", "@io-event", "@ipc", "@keyring", "@memlock", "@module", "@mount",
        "@network-io", "@obsolete", "@pkey", "@privileged", "@process", "@raw-io",
        "@reboot", "@resources", "@sandbox", "@setuid", "@signal", "@swap", "@sync",
        "@system-service", "@timer", "@known",
    }
)  # fmt: skip

#: Below this ``MemoryMax=`` no worker can start: a Python interpreter alone needs more.
MEMORY_FLOOR: Final = 4 * 1024 * 1024

#: What a worker needs to start, measured on systemd 252 / CPython 3.11 (interpreter,
#: sandboxed's worker modules, a small function module): quoted in errors.
WORKER_MEMORY_NEED: Final = "about 10 MiB"


def check(directives: Iterable[Any]) -> None:
    """Raise :class:`InvalidDirectiveValueError` for a value that cannot work in a sandbox."""
    for d in directives:
        checker = _CHECKS.get(d.name)
        if checker is not None:
            checker(d.name, d.value)


def _syscall_groups(name: str, value: Any) -> None:
    for _allow, items in value:
        for item in items:
            if item.startswith("@") and item not in SYSCALL_GROUPS:
                known = " ".join(sorted(SYSCALL_GROUPS))
                raise InvalidDirectiveValueError(
                    name,
                    item,
                    f"system call names, or one of systemd's groups: {known}",
                    f"no system call group {item}; systemd would refuse to start the unit",
                )


def _root_directory(name: str, value: Any) -> None:
    if value:
        raise InvalidDirectiveValueError(
            name,
            value,
            "nothing: sandboxed sets the file system up itself; use ReadOnlyPaths=, "
            "InaccessiblePaths=, TemporaryFileSystem= or ProtectSystem=strict to shape it",
            "the worker is this host's Python interpreter, which is not inside that root "
            "(the unit could not even exec it)",
        )


def _memory(name: str, value: Any) -> None:
    if isinstance(value, int) and value < MEMORY_FLOOR:
        raise InvalidDirectiveValueError(
            name,
            value,
            f"at least {MEMORY_FLOOR // 2**20} MiB; a worker needs {WORKER_MEMORY_NEED} to "
            "start (a Python interpreter with sandboxed's worker), plus what the call uses",
            "below the floor of any Python interpreter: the worker could not start",
        )


_CHECKS: Final = {
    "SystemCallFilter": _syscall_groups,
    "SystemCallLog": _syscall_groups,
    "RootDirectory": _root_directory,
    "RootImage": _root_directory,
    "MemoryMax": _memory,
    "MemoryHigh": _memory,
    "MemoryLimit": _memory,
}
