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
    DescriptorLimitError,
    DirectiveRejectedError,
    EmbeddedManagerError,
    InvalidDirectiveValueError,
    ManagerAccessDeniedError,
    ManagerError,
    ManagerInUseError,
    ManagerNotFoundError,
    ManagerUnavailableError,
    PayloadTooLargeError,
    RemoteError,
    ResourceLimitError,
    SandboxError,
    SandboxMemoryError,
    SandboxTimeoutError,
    SerializationError,
    UnenforceableDirectiveError,
    UnitFailedError,
    UnknownDirectiveError,
    UnreachableCodeError,
    UnsafeResultError,
    WorkerDiedError,
)

if TYPE_CHECKING:
    from sandboxed.api.decorator import sandboxed
    from sandboxed.api.executor import (
        SandboxFuture,
        TransientUnitPoolExecutor,
    )
    from sandboxed.api.function import SandboxedFunction
    from sandboxed.api.security import security_report
    from sandboxed.directives.directive import (
        Directive,
        RawProperty,
    )
    from sandboxed.directives.options import (
        OptionSet,
    )
    from sandboxed.directives.presets import (
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
    from sandboxed.runtime.registry import (
        configure_cache,
        shutdown,
    )
    from sandboxed.runtime.stats import (
        CallStats,
        last_call_stats,
    )
    from sandboxed.systemd.locate import (
        configure,
    )
    from sandboxed.systemd.security import (
        SecurityItem,
        SecurityReport,
    )

_LAZY = {
    "AsUser": "sandboxed.directives.presets",
    "CPU": "sandboxed.directives.presets",
    "CallStats": "sandboxed.runtime.stats",
    "Directive": "sandboxed.directives.directive",
    "Hardened": "sandboxed.directives.presets",
    "Memory": "sandboxed.directives.presets",
    "NoNetwork": "sandboxed.directives.presets",
    "OptionSet": "sandboxed.directives.options",
    "Preset": "sandboxed.directives.presets",
    "PrivateTmp": "sandboxed.directives.presets",
    "RawProperty": "sandboxed.directives.directive",
    "ReadOnly": "sandboxed.directives.presets",
    "SafeResults": "sandboxed.directives.presets",
    "SandboxFuture": "sandboxed.api.executor",
    "SandboxedFunction": "sandboxed.api.function",
    "SecurityItem": "sandboxed.systemd.security",
    "SecurityReport": "sandboxed.systemd.security",
    "Tasks": "sandboxed.directives.presets",
    "Timeout": "sandboxed.directives.presets",
    "TransientUnitPoolExecutor": "sandboxed.api.executor",
    "configure": "sandboxed.systemd.locate",
    "configure_cache": "sandboxed.runtime.registry",
    "last_call_stats": "sandboxed.runtime.stats",
    "preset_by_name": "sandboxed.directives.presets",
    "sandboxed": "sandboxed.api.decorator",
    "security_report": "sandboxed.api.security",
    "shutdown": "sandboxed.runtime.registry",
}

__all__ = [
    "CPU",
    "AsUser",
    "CallStats",
    "ConfigurationError",
    "ConflictingDirectivesError",
    "DescriptorLimitError",
    "Directive",
    "DirectiveRejectedError",
    "EmbeddedManagerError",
    "Hardened",
    "InvalidDirectiveValueError",
    "ManagerAccessDeniedError",
    "ManagerError",
    "ManagerInUseError",
    "ManagerNotFoundError",
    "ManagerUnavailableError",
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
    "UnenforceableDirectiveError",
    "UnitFailedError",
    "UnknownDirectiveError",
    "UnreachableCodeError",
    "UnsafeResultError",
    "WorkerDiedError",
    "configure",
    "configure_cache",
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
