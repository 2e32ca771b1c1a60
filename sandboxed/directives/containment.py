"""The containment baseline: what every sandbox gets, whatever its options.

The function's code is the attacker, possibly root. Whatever preset it runs
under, it must not reach the service manager or any other privileged socket,
other units' processes, the host's namespaces, mounts or cgroups, the kernel's
most dangerous interfaces, or places shared with later sandboxes
(docs/security.md has the threat model and the test of each promise). These
directives are added to every unit; ``containment=False`` (the one, loudly
named opt-out) leaves them off, for a sandbox that truly needs one of them
(one that manages units, say).

How the user's directives combine with the baseline: never by widening it.
Each baseline directive is combined with the user's value of the same
directive by the preset algebra's restrictive rule
(:func:`sandboxed.directives.presets.combine`): capability sets and namespace
allow lists intersect, system call and address family deny lists unite,
path lists unite. A single value that would weaken the baseline
(``PrivateUsers=no``, ``ProtectControlGroups=no``...) is refused with a
:class:`~sandboxed.ConflictingDirectivesError` that names
``containment=False``; one that is at least as strict is kept, and a stronger
one is used instead of the baseline's (``ProtectControlGroups=strict``: see
:data:`AT_LEAST_BASELINE` for the order). A directive's string spelling
(``ProtectControlGroupsEx=``, ``PrivateUsersEx=``) is the same setting, and is
combined with the baseline the same way. The user's ``SystemCallErrorNumber=``
is kept (it chooses an errno, it does not widen).

The worker adds what systemd cannot say (see :mod:`sandboxed.worker.guard`):
a filter against signals to PID 1, to every process at once and to process
groups, and a check that the namespaces the unit was promised are its own.

This module is pure: it takes values and returns values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Final

from sandboxed._errors import ConflictingDirectivesError
from sandboxed.directives.directive import Directive, setting_of
from sandboxed.directives.presets import combine

__all__ = ["ADDED", "AT_LEAST_BASELINE", "BASELINE", "LABEL", "apply", "check"]

LABEL: Final = "containment baseline"

#: Capabilities no sandbox keeps: each one is a way out of the unit for root (or for
#: any process holding it): tracing other processes, namespaces and mounts, the boot,
#: modules, raw I/O, the clock, the network stack's configuration, BPF and perf, reading
#: any file by handle, signalling other users' processes, raw packets, ...
DROPPED_CAPABILITIES: Final = (
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_DAC_READ_SEARCH",
    "CAP_KILL",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
)

#: System calls no sandbox makes. io_uring does socket, file and other operations
#: that neither seccomp nor RestrictAddressFamilies= can see (IORING_OP_SOCKET made
#: AF_INET sockets under NoNetwork); the rest are kernel interfaces a Python call has
#: no business with, each a well-known way out or a large attack surface.
DENIED_SYSCALLS: Final = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "userfaultfd",
    "open_by_handle_at",
    "pidfd_getfd",
    "@debug",  # ptrace, process_vm_readv/writev, perf_event_open
    "@keyring",  # the user keyring is shared by every process of a uid
    "@module",
    "@mount",
    "@raw-io",
    "@reboot",  # reboot, kexec_load, kexec_file_load
    "@swap",
)

_BASELINE_VALUES: Final[Mapping[str, object]] = {
    # A read-only, empty /run: no manager socket (/run/systemd/private), no system bus,
    # no user buses (/run/user), no other daemon's socket, nothing left for a later
    # sandbox in /run or /run/lock. It also gives every unit a mount namespace of its
    # own, so that nothing it does to mounts reaches the manager's.
    "TemporaryFileSystem": "/run:ro,mode=0755",
    # A user namespace per unit: no process outside it passes the kernel's ptrace
    # check (/proc/PID/root, /mem, /environ, ptrace, process_vm_*, pidfd_getfd), and
    # root inside has no capability over anything the host owns.
    "PrivateUsers": True,
    "NoNewPrivileges": True,
    # An IPC namespace per unit: System V segments, queues and semaphores of the host
    # (root's 0600 ones too: root passes their permission check) are out of reach, and
    # none made here outlives the unit for a later sandbox to read.
    "PrivateIPC": True,
    "CapabilityBoundingSet": "~" + " ".join(DROPPED_CAPABILITIES),
    "ProtectControlGroups": True,
    "RestrictNamespaces": True,
    "ProtectKernelTunables": True,
    "ProtectKernelModules": True,
    "ProtectKernelLogs": True,
    "SystemCallFilter": "~" + " ".join(DENIED_SYSCALLS),
    # AF_VSOCK is not namespaced: a vsock port bound in one sandbox is the host's.
    "RestrictAddressFamilies": "~AF_VSOCK",
}

#: The baseline's directives, by name.
BASELINE: Final[Mapping[str, Directive]] = {
    name: Directive.of(name, value) for name, value in _BASELINE_VALUES.items()
}
_ERRNO: Final = Directive.of("SystemCallErrorNumber", "EPERM")
#: Everything :func:`apply` may add: the baseline, and the errno its filter returns
#: unless the user sets one (a raw property of any of these would be applied over it).
ADDED: Final[Mapping[str, Directive]] = {**BASELINE, _ERRNO.name: _ERRNO}

#: The single values that hold at least what the baseline's does, weakest first (the
#: baseline's own is the first); any other is refused. A boolean baseline not named
#: here is held by "yes" alone. From systemd.exec(5) of 257:
#:
#: * ``ProtectControlGroups=strict`` is ``yes`` (a read-only /sys/fs/cgroup) in a
#:   cgroup namespace of the unit's own, so the rest of the tree is not even seen.
#:   ``private`` is *not* above ``yes``: its private mount is writable (systemd
#:   downgrades it to ``no``, not ``yes``, where it cannot hold it), so it is refused.
#: * ``PrivateUsers=yes`` (``self``) maps root and the unit's own user only;
#:   ``identity`` and ``full`` map more of the host's users, over whose files root in
#:   the namespace then holds its capabilities: weaker, refused.
AT_LEAST_BASELINE: Final[Mapping[str, tuple[object, ...]]] = {
    "ProtectControlGroups": (True, "strict"),
    "PrivateUsers": (True,),
}


def _held(name: str) -> tuple[object, ...]:
    return AT_LEAST_BASELINE.get(name, (True,))


def _rank(d: Directive) -> int:
    held = _held(d.name)
    return held.index(d.value) if d.value in held else -1


def _combined(user: Directive, base: Directive, written: Directive | None = None) -> Directive:
    """``user`` and ``base`` as one directive at least as strict as both; ``written`` is
    the user's directive as they spelled it (``PrivateUsersEx=``), for the message."""
    if user == base:
        return base
    if not user.spec.list_valued:
        # A single value: the user's may only say the same or something stronger (for
        # booleans that is "yes"). Anything else would turn a part of the baseline off.
        if isinstance(base.value, bool) and _rank(user) >= 0:
            return user if _rank(user) > _rank(base) else base
        shown = written or user
        yours, ours = str(shown).split("=", 1)[1], str(base).split("=", 1)[1]
        err = ConflictingDirectivesError(shown.name, (yours, ours), ("yours", LABEL))
        # Not "choose one with a keyword": no keyword turns a part of the baseline off.
        err.args = (
            f"{shown.name}={yours} would weaken the containment baseline every sandbox gets "
            f"({base.name}={ours}; docs/security.md); drop it, or pass containment=False, "
            "which turns the whole baseline off",
        )
        raise err
    try:
        return combine(user, base, ("yours", LABEL))
    except ConflictingDirectivesError as err:
        err.add_note(
            "sandboxed combines your value with the containment baseline's so that the "
            "result is at least as strict as both; pass containment=False to turn the "
            "baseline off."
        )
        raise


def check(directives: Iterable[Directive]) -> None:
    """Raise :class:`ConflictingDirectivesError` if ``directives`` cannot take the baseline."""
    apply(directives)


def apply(directives: Iterable[Directive], skip: Collection[str] = ()) -> list[Directive]:
    """``directives`` with the baseline combined in (sorted by name); ``skip`` names
    baseline directives to leave out (those a user manager does not support)."""
    # By setting: a string spelling travels as another bus property (systemd applies
    # whichever comes last), so left beside the baseline's it would undo it. An option
    # set holds each setting once, in its own spelling; directives handed here may not.
    asked: dict[str, list[Directive]] = {}
    for d in directives:
        asked.setdefault(setting_of(d.name), []).append(d)
    by_name: dict[str, Directive] = {}
    for name, written in asked.items():
        if name in BASELINE and name not in skip:
            continue  # combined with the baseline below, each spelling on its own
        one = written[0].canonical()
        for d in written[1:]:
            one = combine(one, d, ("yours", "yours"))
        by_name[name] = one
    for name, base in BASELINE.items():
        if name in skip:
            continue
        combined = [_combined(d.canonical(), base, d) for d in asked.get(name, ())]
        by_name[name] = max(combined, key=_rank) if combined else base
    by_name.setdefault(_ERRNO.name, _ERRNO)
    return [by_name[k] for k in sorted(by_name)]
