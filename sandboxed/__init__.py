"""sandboxed: run one Python call inside a systemd transient unit.

The public API, re-exported from the modules that define it. Only the errors are
imported eagerly: the rest loads on first use, so that ``import sandboxed`` (also
done by every worker that imports a module defining sandboxed functions) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sandboxed._errors import (
    ConfigurationError,
    ConflictingDirectivesError,
    DirectiveRejectedError,
    EmbeddedManagerError,
    InvalidDirectiveValueError,
    ManagerError,
    ManagerNotFoundError,
    PayloadTooLargeError,
    RemoteError,
    ResourceLimitError,
    SandboxError,
    SandboxMemoryError,
    SandboxTimeoutError,
    SerializationError,
    UnitFailedError,
    UnknownDirectiveError,
    UnreachableCodeError,
    UnsafeResultError,
    WorkerDiedError,
)

if TYPE_CHECKING:
    from sandboxed._decorator import (
        last_call_stats,
        sandboxed,
    )
    from sandboxed._directives import (
        Directive,
        RawProperty,
    )
    from sandboxed._executor import (
        SandboxFuture,
        TransientUnitPoolExecutor,
    )
    from sandboxed._manager import (
        configure,
    )
    from sandboxed._options import (
        OptionSet,
    )
    from sandboxed._presets import (
        CPU,
        AsUser,
        Hardened,
        Memory,
        NoNetwork,
        Preset,
        PrivateTmp,
        ReadOnly,
        SafeResults,
        Tasks,
        Timeout,
        preset_by_name,
    )
    from sandboxed._registry import (
        shutdown,
    )
    from sandboxed._security import (
        SecurityItem,
        SecurityReport,
        security_report,
    )
    from sandboxed._stats import (
        CallStats,
    )
    from sandboxed._wrapper import SandboxedFunction

_LAZY = {
    "AsUser": "sandboxed._presets",
    "CPU": "sandboxed._presets",
    "CallStats": "sandboxed._stats",
    "Directive": "sandboxed._directives",
    "Hardened": "sandboxed._presets",
    "Memory": "sandboxed._presets",
    "NoNetwork": "sandboxed._presets",
    "OptionSet": "sandboxed._options",
    "Preset": "sandboxed._presets",
    "PrivateTmp": "sandboxed._presets",
    "RawProperty": "sandboxed._directives",
    "ReadOnly": "sandboxed._presets",
    "SafeResults": "sandboxed._presets",
    "SandboxFuture": "sandboxed._executor",
    "SandboxedFunction": "sandboxed._wrapper",
    "SecurityItem": "sandboxed._security",
    "SecurityReport": "sandboxed._security",
    "Tasks": "sandboxed._presets",
    "Timeout": "sandboxed._presets",
    "TransientUnitPoolExecutor": "sandboxed._executor",
    "configure": "sandboxed._manager",
    "last_call_stats": "sandboxed._decorator",
    "preset_by_name": "sandboxed._presets",
    "sandboxed": "sandboxed._decorator",
    "security_report": "sandboxed._security",
    "shutdown": "sandboxed._registry",
}

__all__ = [
    "CPU",
    "AsUser",
    "CallStats",
    "ConfigurationError",
    "ConflictingDirectivesError",
    "Directive",
    "DirectiveRejectedError",
    "EmbeddedManagerError",
    "Hardened",
    "InvalidDirectiveValueError",
    "ManagerError",
    "ManagerNotFoundError",
    "Memory",
    "NoNetwork",
    "OptionSet",
    "PayloadTooLargeError",
    "Preset",
    "PrivateTmp",
    "RawProperty",
    "ReadOnly",
    "RemoteError",
    "ResourceLimitError",
    "SafeResults",
    "SandboxError",
    "SandboxFuture",
    "SandboxMemoryError",
    "SandboxTimeoutError",
    "SandboxedFunction",
    "SecurityItem",
    "SecurityReport",
    "SerializationError",
    "Tasks",
    "Timeout",
    "TransientUnitPoolExecutor",
    "UnitFailedError",
    "UnknownDirectiveError",
    "UnreachableCodeError",
    "UnsafeResultError",
    "WorkerDiedError",
    "configure",
    "last_call_stats",
    "preset_by_name",
    "sandboxed",
    "security_report",
    "shutdown",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandboxed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
