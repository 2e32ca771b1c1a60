"""The exception hierarchy of sandboxed.

Every error raised by sandboxed derives from :class:`SandboxError`; each
subclass also derives from the builtin whose meaning it shares, so that
``except ValueError`` or ``except TimeoutError`` keep working for callers
that do not know about sandboxed.
"""

from __future__ import annotations

from collections.abc import Sequence


def _restore(
    cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]
) -> BaseException:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class SandboxError(Exception):
    """Base class of every error raised by sandboxed itself."""

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take structured arguments, not their message: rebuild from state
        # so that errors cross process boundaries (workers, Dask, multiprocessing).
        return (_restore, (type(self), self.args, dict(self.__dict__)))


# -- configuration: raised before any unit exists ------------------------------------------


class ConfigurationError(SandboxError, ValueError):
    """The sandbox was configured with something sandboxed cannot accept."""


class UnknownDirectiveError(ConfigurationError):
    """A directive name that systemd does not know for a transient service.

    Attributes: ``directive`` (the name given), ``suggestions`` (closest names).
    """

    def __init__(self, directive: str, suggestions: Sequence[str] = ()) -> None:
        self.directive = directive
        self.suggestions = tuple(suggestions)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown directive {directive!r}{hint}")


class InvalidDirectiveValueError(ConfigurationError):
    """A known directive with a value it does not accept.

    Attributes: ``directive``, ``value``, ``accepted`` (a description of the forms accepted).
    """

    def __init__(self, directive: str, value: object, accepted: str, reason: str = "") -> None:
        self.directive = directive
        self.value = value
        self.accepted = accepted
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(f"invalid value {value!r} for {directive}={why}; accepted: {accepted}")


class ConflictingDirectivesError(ConfigurationError):
    """Two presets set the same directive to different values.

    Attributes: ``directive``, ``values`` (the conflicting values), ``sources``.
    """

    def __init__(
        self, directive: str, values: Sequence[object], sources: Sequence[str] = ()
    ) -> None:
        self.directive = directive
        self.values = tuple(values)
        self.sources = tuple(sources)
        origin = f" (from {' and '.join(self.sources)})" if self.sources else ""
        shown = " vs ".join(repr(v) for v in self.values)
        explicit = {"keyword", "ns_options", "positional", "raw"}
        if self.sources and set(self.sources) <= explicit:
            # Both were given explicitly: a keyword would not settle it, it is one of them.
            hint = f"give {directive}= once, with the value you mean"
        else:
            hint = "pass the directive as a keyword argument to choose one explicitly"
        super().__init__(f"conflicting values for {directive}=: {shown}{origin}; {hint}")


class UnreachableCodeError(ConfigurationError):
    """The sandbox's user cannot reach a path the worker needs (interpreter, module...).

    Attributes: ``path``, ``remedy``.
    """

    def __init__(self, path: str, reason: str, remedy: str) -> None:
        self.path = path
        self.reason = reason
        self.remedy = remedy
        super().__init__(f"the sandbox cannot reach {path}: {reason}; {remedy}")


class UnenforceableDirectiveError(ConfigurationError):
    """A directive the service manager in use cannot enforce on this host.

    Raised when the sandbox is built, before any unit starts, instead of running
    a sandbox weaker than asked. Attributes: ``directive`` (the first refused
    name), ``reason``, ``remedy``, ``refused`` (every ``(directive, value, reason)``),
    ``manager``; when a directive is newer than the manager's systemd, ``needed``
    (the version it needs) and ``running`` (the manager's), else None.
    """

    def __init__(
        self,
        manager: str,
        refused: Sequence[tuple[str, str, str]],
        remedy: str,
        *,
        needed: int | None = None,
        running: int | None = None,
    ) -> None:
        self.manager = manager
        self.needed = needed
        self.running = running
        self.refused = tuple(refused)
        self.directive = self.refused[0][0] if self.refused else ""
        self.reason = self.refused[0][2] if self.refused else ""
        self.remedy = remedy
        shown = "; ".join(f"{name}={value}: {why}" for name, value, why in self.refused)
        what = "it" if len(self.refused) == 1 else "them"
        super().__init__(f"{manager} cannot hold {shown}; remove {what}, or {remedy}")


# -- the service manager ---------------------------------------------------------------------


class ManagerError(SandboxError, OSError):
    """No usable systemd service manager, or it failed a request."""


class ManagerNotFoundError(ManagerError):
    """No service manager could be found or started."""


class ManagerAccessDeniedError(ManagerError, PermissionError):
    """The service manager refused to start units for this caller (not root, no polkit).

    Attributes: ``address``, ``uid``, ``dbus_error``.
    """

    def __init__(self, address: str, uid: int, dbus_error: str, remedy: str) -> None:
        self.address = address
        self.uid = uid
        self.dbus_error = dbus_error
        self.remedy = remedy
        super().__init__(
            f"the service manager at {address} denied uid {uid} starting a unit "
            f"({dbus_error}); {remedy}"
        )


class ManagerUnavailableError(ManagerError, ConnectionError):
    """The service manager did not answer: it is reloading, re-executing, restarting
    or gone. Starts retry on this for a bounded time before they raise it."""


class ManagerInUseError(ManagerError):
    """The embedded manager was not stopped: other processes still run sandboxes in it.

    Attributes: ``units``, (name, description) pairs; a sandbox unit's description
    names its caller's pid.
    """

    def __init__(self, message: str, units: Sequence[tuple[str, str]] = ()) -> None:
        self.units = tuple(units)
        super().__init__(message)


class EmbeddedManagerError(ManagerError):
    """The embedded systemd could not be started, reached or stopped.

    Attributes: ``log_tail`` (last lines of the manager's log, if any).
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        tail = f"\n--- last lines of the manager's log ---\n{log_tail}" if log_tail else ""
        super().__init__(message + tail)


class DirectiveRejectedError(ManagerError, ValueError):
    """The running systemd refused a directive that sandboxed accepted.

    Attributes: ``directive``, ``systemd_version``, ``dbus_error``.
    """

    def __init__(
        self, directive: str | None, systemd_version: str, dbus_error: str, message: str
    ) -> None:
        self.directive = directive
        self.systemd_version = systemd_version
        self.dbus_error = dbus_error
        what = f"{directive}=" if directive else "the unit's properties"
        super().__init__(f"systemd {systemd_version} rejected {what}: {message}")


class UnitFailedError(ManagerError):
    """A transient unit failed to start or its worker did not come up.

    Attributes: ``unit``, ``result``, ``stderr`` (what the worker printed, if anything),
    ``exit_status`` (systemd's, when it was learnt), ``vanished`` (the manager no longer
    had the unit when its status was asked, and the worker printed nothing).
    """

    def __init__(
        self,
        unit: str,
        result: str,
        stderr: str = "",
        exit_status: int | None = None,
        vanished: bool = False,
    ) -> None:
        self.unit = unit
        self.result = result
        self.stderr = stderr
        self.exit_status = exit_status
        self.vanished = vanished
        detail = f"\n--- worker stderr ---\n{stderr}" if stderr else ""
        super().__init__(f"unit {unit} failed to start: {result}{detail}")


# -- calls ---------------------------------------------------------------------------------


class SerializationError(SandboxError, TypeError):
    """A value could not be sent across the sandbox boundary.

    Attributes: ``which`` (``"function"``, ``"argument 'x'"``, ``"result"``...), ``reason``.
    """

    def __init__(self, which: str, reason: str) -> None:
        self.which = which
        self.reason = reason
        super().__init__(f"cannot serialize the {which}: {reason}")


class RemoteError(SandboxError):
    """An exception raised in the sandbox that could not be rebuilt in the caller.

    Attributes: ``type_name``, ``message``, ``remote_traceback``.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}")


class RemoteTraceback(Exception):
    """Carries the sandbox-side traceback text; chained as ``__cause__`` of a user's error."""

    def __init__(self, tb: str) -> None:
        self.tb = tb
        super().__init__(tb)

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class WorkerDiedError(SandboxError, RuntimeError):
    """The worker process running a call died before answering.

    Attributes: ``unit``, ``exit_code`` (or None), ``signal`` (name, or None),
    ``reason`` (text). A worker the OOM killer stopped raises the subclass
    :class:`SandboxMemoryError`.
    """

    def __init__(
        self,
        unit: str,
        reason: str,
        exit_code: int | None = None,
        signal: str | None = None,
    ) -> None:
        self.unit = unit
        self.reason = reason
        self.exit_code = exit_code
        self.signal = signal
        super().__init__(f"the worker in {unit} died: {reason}")


class SandboxMemoryError(WorkerDiedError, MemoryError):
    """The kernel's OOM killer stopped the call because it exceeded ``MemoryMax=``.

    Attributes (besides WorkerDiedError's): ``limit`` (bytes).
    """

    def __init__(self, unit: str, limit: int | None, reason: str = "") -> None:
        self.limit = limit
        shown = f"MemoryMax={limit} bytes" if limit is not None else "its memory limit"
        text = reason or f"the kernel's OOM killer stopped it: the call exceeded {shown}"
        super().__init__(unit, text, signal="SIGKILL")


class SandboxTimeoutError(SandboxError, TimeoutError):
    """A call ran longer than its timeout and was stopped.

    Attributes: ``timeout`` (seconds), ``unit``.
    """

    def __init__(self, timeout: float, unit: str = "") -> None:
        self.timeout = timeout
        self.unit = unit
        where = f" in {unit}" if unit else ""
        super().__init__(f"the call{where} exceeded its timeout of {timeout:g} s and was stopped")


class DescriptorLimitError(SandboxError, OSError):
    """The calling process ran out of file descriptors (``EMFILE``) starting a sandbox.

    Each live sandbox unit holds a few descriptors in the caller (its control and
    diagnostics channels, one socket per worker, its cgroup files). Attributes:
    ``limit`` (the soft ``RLIMIT_NOFILE``), ``open`` (descriptors open when it happened).
    """

    def __init__(self, what: str, limit: int | None = None, open: int | None = None) -> None:
        self.limit = limit
        self.open = open
        detail = f" ({open} open, limit {limit})" if limit is not None else ""
        super().__init__(
            f"cannot {what}: this process has run out of file descriptors{detail}; each live "
            "sandbox holds a few: raise the limit (ulimit -n) or keep fewer sandboxes alive "
            "with sandboxed.configure_cache(max_units=...)"
        )


class ResourceLimitError(SandboxError, RuntimeError):
    """The call hit a resource limit other than memory (``TasksMax=``...)."""

    def __init__(self, directive: str, limit: object, message: str) -> None:
        self.directive = directive
        self.limit = limit
        super().__init__(f"{directive}={limit} was hit: {message}")


class PayloadTooLargeError(SerializationError, ValueError):
    """A value is larger than a frame may carry (see ``max_payload``)."""

    def __init__(self, which: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(which, f"{size} bytes is more than the limit of {limit} bytes")


class UnsafeResultError(SandboxError, TypeError):
    """In safe result mode, the sandbox returned something that is not plain data."""


class DBusError(ManagerError):
    """An error reply from the peer. Attributes: ``name`` (D-Bus error name), ``text``."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        super().__init__(f"{name}: {text}")


class ConnectionLost(ManagerUnavailableError):
    """The connection to the service manager closed while a reply was awaited."""


class ProtocolError(ConnectionError):
    """The peer sent something that is not a frame of this protocol."""


def trim(e: BaseException) -> None:
    """Drop the caller-side frames from ``e``'s traceback when it is the user's exception.

    An exception raised by the function in the sandbox comes back with the
    sandbox-side traceback as its ``__cause__`` (as in ``concurrent.futures``);
    the frames of the library that carried it back say nothing to the user.
    Errors of sandboxed itself keep their frames.
    """
    if isinstance(e.__cause__, RemoteTraceback):
        e.with_traceback(None)
