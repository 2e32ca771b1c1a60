"""Presets: named, composable sets of systemd directives and sandboxed options.

A :class:`Preset` stands for a few directives (``NoNetwork`` is
``PrivateNetwork=yes`` and friends) and possibly sandboxed's own options (a
per-call ``timeout``, ``safe_results``). Presets compose with ``|``; the
composition keeps every promise of every part:

- a single-valued directive set by two parts must agree, or the composition
  raises :class:`~sandboxed.ConflictingDirectivesError`; a directive and its
  ``…Ex`` spelling (``PrivateTmp=`` and ``PrivateTmpEx=``) are one setting
  (:func:`~sandboxed.directives.directive.setting_of`), and a preset holds it in
  the directive's own spelling (:meth:`~sandboxed.directives.directive.Directive.canonical`);
- lists that *grant* (``ReadWritePaths=``, ``BindPaths=``, ``Environment=``...)
  are united;
- lists and sets that *restrict* are intersected, so the result is at least as
  strict as each part: deny lists (``SystemCallFilter=~...``) unite, allow lists
  of atoms (``RestrictAddressFamilies=``, ``CapabilityBoundingSet=``,
  ``RestrictNamespaces=``) intersect. Allow lists of system call *groups*
  cannot be intersected without expanding the groups (which depends on the
  systemd version), so two different ones are refused.

Composition is commutative, associative and idempotent, because a composite
is computed from the *set* of its named parts, never from the order in which
``|`` saw them. Equality and hashing follow the effective directives and
options, not the names: ``CPU(0.2) == CPU("20%")``.

This module is pure: it takes values and returns values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from sandboxed._errors import ConfigurationError, ConflictingDirectivesError
from sandboxed.directives.directive import Directive, lookup, setting_of
from sandboxed.directives.values import Invalid, parse_size

__all__ = [
    "CPU",
    "HARDENED_PENDING",
    "PRESETS",
    "AsUser",
    "Hardened",
    "Memory",
    "NoNetwork",
    "Preset",
    "PrivateTmp",
    "ReadOnly",
    "SafeResults",
    "Tasks",
    "Timeout",
    "normalise_option",
    "preset_by_name",
]

# -- sandboxed's own options (not systemd directives) ----------------------------------------


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"invalid timeout {value!r}; accepted: a number of seconds > 0, or None"
        )
    seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(
            f"invalid timeout {value!r}; accepted: a finite number of seconds > 0, or None"
        )
    return seconds


def _flag(name: str) -> Callable[[object], bool | None]:
    def convert(value: object) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        raise ConfigurationError(f"invalid {name} {value!r}; accepted: True or False")

    return convert


def _workers(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"invalid workers {value!r}; accepted: a whole number of workers >= 1, or None"
        )
    return value


def byte_budget(name: str, value: object) -> int | None:
    """The byte count of option ``name`` (an int or systemd's ``512M``), or None."""
    if value is None:
        return None
    try:
        size = parse_size(value, allow_infinity=False)
    except Invalid as exc:
        raise ConfigurationError(
            f"invalid {name} {value!r} ({exc}); accepted: a byte count > 0 "
            "as an int or systemd's '512M', or None"
        ) from None
    if size < 1:
        raise ConfigurationError(f"invalid {name} {value!r}; accepted: a byte count > 0")
    return size


def _max_payload(value: object) -> int | None:
    return byte_budget("max_payload", value)


#: Option name → normaliser. ``None`` always means "not set here".
_OPTION_NORMALISERS: Final[Mapping[str, Callable[[object], Any]]] = {
    "timeout": _timeout,
    "safe_results": _flag("safe_results"),
    "workers": _workers,
    "max_payload": _max_payload,
}


def normalise_option(name: str, value: object) -> Any:
    """The normal form of sandboxed option ``name`` (a key of the normaliser table).

    Raises :class:`ConfigurationError` for a value the option does not accept.
    """
    return _OPTION_NORMALISERS[name](value)


# -- combining two values of one directive ---------------------------------------------------

#: Sets that *restrict* (the value lists what stays allowed): intersected.
_RESTRICTING_MASKS: Final = frozenset({"CapabilityBoundingSet", "RestrictNamespaces"})
#: (bas) allow/deny filters → whether their items are atoms (True) or may be @groups (False).
_FILTERS: Final[Mapping[str, bool]] = {"SystemCallFilter": False, "RestrictAddressFamilies": True}
#: List-valued directives whose values must simply agree: a union or an intersection of
#: them would break one part's promise (``AmbientCapabilities=`` empty means "none").
_MUST_AGREE: Final = frozenset({"AmbientCapabilities", "SystemCallArchitectures"})


def _spelled(d: Directive) -> str:
    return "; ".join(d.spec.render(d.value))


def _conflict(a: Directive, b: Directive, sources: tuple[str, str], why: str = "") -> Exception:
    err = ConflictingDirectivesError(a.name, (_spelled(a), _spelled(b)), sources)
    if why:
        err.add_note(why)
    return err


def _conflict_as_written(
    a: Directive, b: Directive, sources: tuple[str, str], exc: ConflictingDirectivesError
) -> ConflictingDirectivesError:
    """``exc`` about two spellings of one setting, with each value shown as written."""
    err = ConflictingDirectivesError(exc.directive, (str(a), str(b)), sources)
    for note in getattr(exc, "__notes__", ()):
        err.add_note(note)
    return err


def _mask_intersection(a: Any, b: Any) -> tuple[bool, tuple[str, ...]]:
    # (negated, names) means "names are allowed", or with negated "all but names".
    (neg_a, na), (neg_b, nb) = a, b
    if not neg_a and not neg_b:
        return False, tuple(set(na) & set(nb))
    if neg_a and neg_b:
        return True, tuple(set(na) | set(nb))
    pos, neg = (na, nb) if not neg_a else (nb, na)
    return False, tuple(set(pos) - set(neg))


_Filter = tuple[frozenset[str] | None, frozenset[str]]  # (allowed or None for "all", denied)


def _as_filter(d: Directive) -> _Filter | None:
    """The (allow, deny) reading of a filter value, or None when it has no such reading."""
    value: Any = d.value
    clauses = [(allow, items) for allow, items in value if items] if value else []
    if not clauses:
        return None, frozenset()
    if len(clauses) == 1:
        allow, items = clauses[0]
        return (frozenset(items), frozenset()) if allow else (None, frozenset(items))
    if len(clauses) == 2 and clauses[0][0] and not clauses[1][0]:
        # systemd reads "allow A" then "~D" as A minus D.
        return frozenset(clauses[0][1]), frozenset(clauses[1][1])
    return None


def _merge_filters(a: Directive, b: Directive, sources: tuple[str, str]) -> Directive:
    fa, fb = _as_filter(a), _as_filter(b)
    if fa is None or fb is None:
        raise _conflict(
            a, b, sources, "sandboxed merges a filter only of the forms 'A', '~D' or 'A; ~D'."
        )
    (allow_a, deny_a), (allow_b, deny_b) = fa, fb
    atomic = _FILTERS[a.name]
    deny = deny_a | deny_b
    allow: frozenset[str] | None
    if allow_a is None or allow_b is None:
        allow = allow_b if allow_a is None else allow_a
    elif allow_a == allow_b:
        allow = allow_a
    elif atomic:
        if "none" in allow_a | allow_b:
            allow = frozenset({"none"})
        else:
            allow = allow_a & allow_b
            if not allow:
                raise _conflict(a, b, sources, f"The two {a.name}= allow lists share nothing.")
    else:
        raise _conflict(
            a,
            b,
            sources,
            f"Two different {a.name}= allow lists would have to be intersected, and their "
            "@groups differ between systemd versions, so sandboxed cannot do it faithfully.",
        )
    clauses: list[tuple[bool, tuple[str, ...]]] = []
    if allow is not None and atomic:
        kept = allow if "none" in allow else allow - deny
        if not kept:
            raise _conflict(a, b, sources, f"Together they leave no {a.name}= item allowed.")
        clauses.append((True, tuple(sorted(kept))))
    else:
        if allow is not None:
            clauses.append((True, tuple(sorted(allow))))
        if deny:
            clauses.append((False, tuple(sorted(deny))))
    return Directive.of(a.name, tuple(clauses)) if clauses else a


def _merge_environment(a: Directive, b: Directive, sources: tuple[str, str]) -> Directive:
    merged: dict[str, str] = {}
    words: tuple[Any, ...] = (*_items(a), *_items(b))
    for word in words:
        name, _, value = str(word).partition("=")
        if name in merged and merged[name] != value:
            raise ConflictingDirectivesError(
                "Environment", (f"{name}={merged[name]}", f"{name}={value}"), sources
            )
        merged[name] = value
    return Directive.of("Environment", dict(sorted(merged.items())))


def _items(d: Directive) -> tuple[Any, ...]:
    value: Any = d.value
    return tuple(value)


def _is_plain_list(value: Any) -> bool:
    if not isinstance(value, tuple):
        return False
    is_mask = len(value) == 2 and isinstance(value[0], bool)
    is_filter = bool(value) and all(
        isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], bool) for c in value
    )
    return not (is_mask or is_filter)


def _union(a: Directive, b: Directive) -> Directive:
    items = {repr(item): item for item in (*_items(a), *_items(b))}
    return Directive(a.name, tuple(items[k] for k in sorted(items)))


def combine(a: Directive, b: Directive, sources: tuple[str, str]) -> Directive:
    """``a`` and ``b`` (the same directive, from the presets named in ``sources``) as one.

    ``a`` and ``b`` may be two spellings of one setting (``PrivateTmp=yes`` and
    ``PrivateTmpEx=no``): they combine in the directive's own spelling, and a
    conflict names both as written. Raises :class:`ConflictingDirectivesError`
    when they cannot be combined without breaking the promise of one of them.
    """
    if a.name != b.name:
        try:
            return combine(a.canonical(), b.canonical(), sources)
        except ConflictingDirectivesError as exc:
            raise _conflict_as_written(a, b, sources, exc) from None
    if a == b:
        return a
    if not a.spec.list_valued or a.name in _MUST_AGREE:
        raise _conflict(a, b, sources)
    if a.name in _FILTERS:
        return _merge_filters(a, b, sources)
    if a.name in _RESTRICTING_MASKS:
        return Directive.of(a.name, _mask_intersection(a.value, b.value))
    if a.name == "Environment":
        return _merge_environment(a, b, sources)
    if _is_plain_list(a.value) and _is_plain_list(b.value):
        return _union(a, b)
    raise _conflict(a, b, sources)  # a set or filter kind with no composition rule here


# -- presets -----------------------------------------------------------------------------------


@attrs.frozen
class _Part:
    """One named building block of a preset (what a bare name like ``NoNetwork`` is)."""

    label: str
    directives: tuple[Directive, ...]
    options: tuple[tuple[str, Any], ...]


def _merge_parts(
    parts: Iterable[_Part],
) -> tuple[tuple[Directive, ...], tuple[tuple[str, Any], ...]]:
    directives: dict[str, tuple[Directive, str]] = {}
    options: dict[str, tuple[Any, str]] = {}
    # A fixed fold order makes the result independent of how `|` was written.
    for part in sorted(parts, key=lambda p: (p.label, repr(p.directives), repr(p.options))):
        for d in part.directives:
            key = setting_of(d.name)
            if key in directives:
                seen, where = directives[key]
                directives[key] = (
                    combine(seen, d, (where, part.label)),
                    f"{where} | {part.label}",
                )
            else:
                directives[key] = (d, part.label)
        for name, value in part.options:
            if name in options and options[name][0] != value:
                raise ConflictingDirectivesError(
                    name, (options[name][0], value), (options[name][1], part.label)
                )
            options.setdefault(name, (value, part.label))
    return (
        tuple(d.canonical() for _, (d, _) in sorted(directives.items())),
        tuple((k, v) for k, (v, _) in sorted(options.items())),
    )


@attrs.frozen(repr=False)
class Preset:
    """A named set of systemd directives and sandboxed options; compose with ``|``.

    ``directives`` are the :class:`~sandboxed.directives.directive.Directive` objects it
    stands for (sorted by name), ``options`` its sandboxed options as sorted
    ``(name, value)`` pairs (``timeout``, ``safe_results``, ``workers``, ``max_payload``).
    Build your own with :meth:`define`.
    """

    directives: tuple[Directive, ...]
    options: tuple[tuple[str, Any], ...]
    _parts: tuple[_Part, ...] = attrs.field(eq=False, alias="parts")

    @classmethod
    def define(
        cls,
        label: str,
        directives: Mapping[str, object] | Iterable[Directive] = (),
        *,
        timeout: float | None = None,
        safe_results: bool | None = None,
        workers: int | None = None,
        max_payload: int | str | None = None,
    ) -> Preset:
        """A new named preset: ``Preset.define("Scratch", {"ReadWritePaths": "/srv/scratch"})``.

        ``directives`` maps unit-file names to values (or is a list of
        Directives); the keyword options are sandboxed's own. Raises
        :class:`UnknownDirectiveError`, :class:`InvalidDirectiveValueError`,
        :class:`ConflictingDirectivesError` (a name given twice with different
        values) or :class:`ConfigurationError` (a bad option value).
        """
        if not label or not label.strip():
            raise ConfigurationError("a preset needs a non-empty label")
        if isinstance(directives, Mapping):
            given = [Directive.of(name, value) for name, value in directives.items()]
        else:
            given = list(directives)
        raw_options = {
            "timeout": timeout,
            "safe_results": safe_results,
            "workers": workers,
            "max_payload": max_payload,
        }
        opts = tuple(
            sorted(
                (name, normalise_option(name, value))
                for name, value in raw_options.items()
                if value is not None
            )
        )
        merged: dict[str, Directive] = {}
        for d in given:
            key = setting_of(d.name)
            merged[key] = combine(merged[key], d, (label, label)) if key in merged else d
        # The part keeps the spelling written (for messages); the preset, the setting's own.
        part = _Part(label, tuple(merged[k] for k in sorted(merged)), opts)
        return cls(tuple(d.canonical() for d in part.directives), part.options, parts=(part,))

    def __or__(self, other: object) -> Preset:
        if not isinstance(other, Preset):
            return NotImplemented
        parts: list[_Part] = []
        for part in (*self._parts, *other._parts):
            if part not in parts:
                parts.append(part)
        directives, options = _merge_parts(parts)
        return Preset(directives, options, parts=tuple(parts))

    @property
    def names(self) -> tuple[str, ...]:
        """The labels of the named presets this one is made of, in the order written."""
        return tuple(dict.fromkeys(p.label for p in self._parts))

    def get(self, name: str) -> Directive | None:
        """The directive ``name`` (unit-file spelling) if this preset sets it, else None.

        Either spelling of a setting finds it, in the directive's own
        (``get("PrivateTmpEx")`` is ``PrivateTmp=yes`` in :data:`ReadOnly`).
        """
        canonical = setting_of(lookup(name).name)
        return next((d for d in self.directives if d.name == canonical), None)

    def without(self, names: Iterable[str]) -> Preset:
        """This preset minus the directives and options ``names`` (in every part).

        How an explicit keyword replaces what presets say, even presets that
        disagree among themselves about it.
        """
        drop = {setting_of(n) for n in names}
        parts = tuple(
            _Part(
                p.label,
                tuple(d for d in p.directives if setting_of(d.name) not in drop),
                tuple(o for o in p.options if o[0] not in drop),
            )
            for p in self._parts
        )
        directives, options = _merge_parts(parts)
        return Preset(directives, options, parts=parts)

    def said(self, name: str) -> str:
        """What the parts say about directive or option ``name``: one value, or several
        joined by `` / `` when they disagree ('' when none sets it)."""
        values: dict[str, None] = {}
        key = setting_of(name)
        for p in self._parts:
            values.update(
                {_spelled(d.canonical()): None for d in p.directives if setting_of(d.name) == key}
            )
            values.update({repr(v): None for o, v in p.options if o == name})
        return " / ".join(values)

    def source_of(self, name: str) -> str:
        """The names of the parts that set directive ``name``, joined by `` | `` ('' if none)."""
        key = setting_of(name)
        return " | ".join(
            dict.fromkeys(
                p.label for p in self._parts if any(setting_of(d.name) == key for d in p.directives)
            )
        )

    def option(self, name: str) -> Any:
        """The value of sandboxed option ``name`` if this preset sets it, else None."""
        return dict(self.options).get(name)

    def assignments(self) -> list[str]:
        """The directives as unit-file lines (``PrivateNetwork=yes``...)."""
        return [line for d in self.directives for line in d.assignments()]

    def __repr__(self) -> str:
        return " | ".join(self.names) or "Preset()"


# -- the presets -------------------------------------------------------------------------------

#: Host sockets through which a process without a network can still make the host
#: talk to the network for it (name resolution above all): resolved's varlink socket,
#: the system D-Bus (resolved, NetworkManager, avahi) and nscd. '-': fine if absent.
_NETWORK_PROXIES: Final = (
    "-/run/systemd/resolve",
    "-/run/dbus/system_bus_socket",
    "-/run/nscd",
)

NoNetwork: Final = Preset.define(
    "NoNetwork",
    {
        "PrivateNetwork": True,
        "RestrictAddressFamilies": "AF_UNIX",
        "InaccessiblePaths": _NETWORK_PROXIES,
    },
)
"""No network: an empty network namespace (loopback only), no IP, packet or netlink
sockets at all, and the host's name-resolution sockets hidden. AF_UNIX stays
allowed: the worker's channel is one, and ``asyncio`` needs ``socketpair()``."""

# A unit without User= runs as root, and root undoes read-only mounts unless it lacks
# the means (tests/security/test_escape_filesystem.py): CAP_SYS_ADMIN remounts / read-write
# or mounts over a directory; CAP_DAC_READ_SEARCH reopens any file of the root file system
# with open_by_handle_at() through a writable mount of it (the private /tmp is one); and
# the raw block device in /dev is writable. No effect on code that runs as another user.
ReadOnly: Final = Preset.define(
    "ReadOnly",
    {
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": True,
        "PrivateDevices": True,
        "CapabilityBoundingSet": "~CAP_SYS_ADMIN CAP_DAC_READ_SEARCH",
    },
)
"""The whole file system read-only, home directories included; /tmp and /var/tmp
private and writable (and gone when the unit stops); only pseudo devices in /dev, and
no capability with which root could make it writable again."""

PrivateTmp: Final = Preset.define("PrivateTmp", {"PrivateTmp": True})
"""A private, empty /tmp and /var/tmp, removed when the unit stops."""

SafeResults: Final = Preset.define("SafeResults", safe_results=True)
"""Results come back through the plain-data codec, never unpickled (for untrusted code)."""

# Hardened: the strongest set that still runs ordinary Python as an unprivileged user.
#
# Expected `systemd-analyze security` contributions on systemd 252 (weights from
# src/analyze/analyze-security.c; exposure = 10 * sum(ceil(weight*badness/range)) /
# sum(weight), and the sum of all weights is 56460). Everything Hardened sets scores
# badness 0; what is left:
#
#   assessor                          weight  badness/range  points  why it stays
#   RootDirectory=/RootImage=            200      1/1          200   the worker needs the
#                                                                    host's interpreter
#   DeviceAllow=                        1000      5/10         500   ProtectClock= allows
#                                                                    char-rtc:r
#   ProtectHome=                        1000      1/10         100   tmpfs, not yes: below
#   MemoryDenyWriteExecute=              100      1/1          100   see below
#   RestrictAddressFamilies=~AF_UNIX      25      1/1           25   our channel, and
#                                                                    asyncio's socketpair()
#                                                             ----
#                                                              925 -> 10 * 925 / 56460
#                                                                   = 0.16, shown "0.2 SAFE"
#
# The big ones it zeroes: DynamicUser= 2000 (User=nobody would score 9/10 of it: +0.32),
# PrivateNetwork= 2500, CapabilityBoundingSet= ~14000 in all, RestrictAddressFamilies=
# 3950, RestrictNamespaces= 4100, SystemCallFilter= 9900, IPAddressDeny= 1000.
#
# Choices:
# - DynamicUser=yes rather than User=nobody: each unit gets a uid of its own, so one
#   sandbox cannot signal, ptrace-attach or read the files of another (all "nobody"
#   processes share one uid). It only ever sees world-readable files, like nobody.
#   It implies RemoveIPC=yes (its /dev/shm objects go when the unit stops).
# - A private /dev/shm (TemporaryFileSystem=): PrivateDevices= still bind-mounts the
#   host's, through which a sandbox could read other programs' world-readable shared
#   memory and leave files for the host. 1777 like the host's, so that multiprocessing's
#   semaphores keep working inside the unit.
# - ProtectHome=tmpfs rather than yes: /home is an empty 0755 tmpfs in which a
#   read-only bind mount of a directory under a 0700 home becomes reachable at its own
#   path (under ProtectHome=yes the inaccessible /home blocks the way). /root stays 0700.
# - SystemCallFilter=@system-service minus @privileged @resources, failing with EPERM
#   rather than SIGSYS, so code that probes (os.sched_setaffinity, os.nice) gets a
#   PermissionError instead of a dead worker.
# - No MemoryDenyWriteExecute=: it breaks ctypes/cffi callbacks and JITs, and buys
#   nothing against code that can already call any allowed syscall through ctypes.
_HARDENED: Final[Mapping[str, object]] = {
    "DynamicUser": True,
    "NoNewPrivileges": True,
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "SystemCallFilter": (
        (True, ("@system-service",)),
        (False, ("@privileged", "@resources")),
    ),
    "SystemCallErrorNumber": "EPERM",
    "SystemCallArchitectures": "native",
    "ProtectSystem": "strict",
    "ProtectHome": "tmpfs",
    "PrivateTmp": True,
    "TemporaryFileSystem": "/dev/shm:mode=1777,nosuid,nodev",
    "PrivateDevices": True,
    "PrivateNetwork": True,
    "PrivateUsers": True,
    "PrivateMounts": True,
    "PrivateIPC": True,
    "ProtectKernelTunables": True,
    "ProtectKernelModules": True,
    "ProtectKernelLogs": True,
    "ProtectControlGroups": True,
    "ProtectClock": True,
    "ProtectHostname": True,
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": True,
    "RestrictRealtime": True,
    "RestrictSUIDSGID": True,
    "LockPersonality": True,
    "RestrictAddressFamilies": "AF_UNIX",
    "InaccessiblePaths": _NETWORK_PROXIES,
    "IPAddressDeny": "any",
    "UMask": "0077",
    "RemoveIPC": True,
    "KeyringMode": "private",
}


def _known(name: str) -> bool:
    try:
        lookup(name)
    except ValueError:
        return False
    return True


#: Directives of Hardened that this build's directive table does not know yet, and that
#: Hardened therefore lacks (a unit test fails while this is not empty).
HARDENED_PENDING: Final = tuple(name for name in _HARDENED if not _known(name))


Hardened: Final = Preset.define(
    "Hardened",
    {name: value for name, value in _HARDENED.items() if _known(name)},
    safe_results=True,
)
"""The strongest set that still runs ordinary Python code: an unprivileged dynamic
user without capabilities, a system call filter, no network, a read-only system,
hidden homes and /tmp, hidden processes, and results decoded as plain data."""


# -- parametrised presets ------------------------------------------------------------------------


def _param(label: str, arg: object, directives: Mapping[str, object], **options: Any) -> Preset:
    return Preset.define(f"{label}({arg!r})", directives, **options)


def AsUser(name: str | int) -> Preset:
    """Run as user ``name`` (``User=``). Raises InvalidDirectiveValueError for a bad name."""
    return _param("AsUser", name, {"User": name})


def CPU(quota: float | str) -> Preset:
    """At most ``quota`` CPUs of time (``CPUQuota=``): ``CPU(0.2)`` and ``CPU("20%")`` are 20 %."""
    return _param("CPU", quota, {"CPUQuota": quota})


def Memory(limit: int | str) -> Preset:
    """At most ``limit`` bytes of memory (``MemoryMax=``, ``"512M"`` or an int), and no swap.

    ``MemorySwapMax=0`` too, so that the limit cannot be dodged by swapping out.
    """
    return _param("Memory", limit, {"MemoryMax": limit, "MemorySwapMax": 0})


def Tasks(limit: int | str) -> Preset:
    """At most ``limit`` processes and threads at once (``TasksMax=``)."""
    return _param("Tasks", limit, {"TasksMax": limit})


def Timeout(seconds: float) -> Preset:
    """Each call may run ``seconds``; then it is stopped and raises SandboxTimeoutError.

    A sandboxed option, not a systemd directive: it bounds one call, not the unit.
    """
    return _param("Timeout", seconds, {}, timeout=seconds)


#: How a call of each preset constructor looks (for errors when one is given bare).
_FACTORY_EXAMPLES: Final = {
    "AsUser": "AsUser('nobody')",
    "CPU": "CPU(0.2)",
    "Memory": "Memory('512M')",
    "Tasks": "Tasks(64)",
    "Timeout": "Timeout(30)",
}


def factory_example(obj: object) -> str | None:
    """``"CPU(0.2)"`` when ``obj`` is a preset constructor (given without its argument)."""
    name = getattr(obj, "__name__", "")
    if name in _FACTORY_EXAMPLES and globals().get(name) is obj:
        return _FACTORY_EXAMPLES[name]
    return None


# -- by name (for the CLI) ----------------------------------------------------------------------

#: The presets that need no argument, by name.
PRESETS: Final[Mapping[str, Preset]] = {
    "Hardened": Hardened,
    "NoNetwork": NoNetwork,
    "PrivateTmp": PrivateTmp,
    "ReadOnly": ReadOnly,
    "SafeResults": SafeResults,
}
_FACTORIES: Final[Mapping[str, Callable[[Any], Preset]]] = {
    "AsUser": AsUser,
    "CPU": CPU,
    "Memory": Memory,
    "Tasks": Tasks,
    "Timeout": lambda s: Timeout(float(s)),
}


def preset_by_name(spec: str) -> Preset:
    """The preset a name stands for: ``"Hardened"``, ``"AsUser(nobody)"``, ``"CPU(20%)"``.

    Several may be joined with ``|`` (``"NoNetwork | ReadOnly"``); names are
    case-insensitive. Raises :class:`ConfigurationError` listing the names
    known, or what the preset itself raises for a bad argument.
    """
    if "|" in spec:
        parts = [preset_by_name(s) for s in spec.split("|")]
        result = parts[0]
        for p in parts[1:]:
            result = result | p
        return result
    text = spec.strip()
    m = re.fullmatch(r"([A-Za-z]+)\s*(?:\(\s*(.*?)\s*\))?", text)
    name = m.group(1).lower() if m else ""
    arg = m.group(2) if m else None
    if arg is None:
        for known, preset in PRESETS.items():
            if known.lower() == name:
                return preset
    else:
        arg = arg.strip("'\"")
        for known, factory in _FACTORIES.items():
            if known.lower() == name:
                try:
                    return factory(arg)
                except ValueError as exc:
                    if isinstance(exc, ConfigurationError):
                        raise
                    raise ConfigurationError(f"invalid argument for {known}: {arg!r}") from exc
    listing = ", ".join([*PRESETS, *(f"{n}(...)" for n in _FACTORIES)])
    raise ConfigurationError(f"unknown preset {spec!r}; known presets: {listing}")
