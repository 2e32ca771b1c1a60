"""The D-Bus properties of a sandbox unit: the user's directives plus what the worker needs."""

from __future__ import annotations

import os
import sys
from typing import Any

import attrs

from sandboxed.directives import containment as baseline
from sandboxed.directives.directive import DIRECTIVES, Directive, setting_of
from sandboxed.directives.enforcement import refuse_unenforceable
from sandboxed.directives.facts import UNKNOWN_HOST, HostFacts
from sandboxed.directives.host import refuse, stronger
from sandboxed.directives.options import bus_properties
from sandboxed.directives.rootless import NOT_IN_USER_MANAGERS, UserManagerHost
from sandboxed.runtime.reach import Identity, check_module_file, needed_paths, plan

Property = tuple[str, str, object]


def directive_value(options: Any, name: str) -> Any:
    """The normalised value of directive ``name`` in ``options``, or None if unset."""
    d = options.get(name)
    return None if d is None else getattr(d, "value", d)


def directive_spelling(options: Any, name: str) -> str | None:
    """Directive ``name`` of ``options`` in systemd's spelling (``"512M"``), or None if unset."""
    d = options.get(name)
    if d is None:
        return None
    try:
        return "; ".join(d.spec.render(d.value))
    except Exception:  # noqa: BLE001 - a spelling for a message only
        return str(getattr(d, "value", d))


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    out = []
    for v in value:
        out.append(v[0] if isinstance(v, tuple) else str(v))
    return out


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("yes", "true", "1", "on")
    return bool(value)


def _on(value: Any) -> bool:
    """A directive that is a boolean or a named mode (``PrivateTmp=disconnected``) is on."""
    if isinstance(value, str) and value.lower() not in ("yes", "true", "1", "on", "no", "false"):
        return value.lower() not in ("0", "off", "")
    return _bool(value)


def _identity(options: Any) -> Identity:
    user = directive_value(options, "User")
    return Identity.of(
        str(user) if user is not None else None,
        dynamic=_bool(directive_value(options, "DynamicUser")),
        # Either spelling: an option set holds the setting once, in its own spelling.
        private_users=_on(directive_value(options, "PrivateUsers")),
    )


_modules_checked: set[tuple[Any, str]] = set()


def check_module(fn: Any, options: Any) -> None:
    """Raise UnreachableCodeError if the module ``fn`` is imported from in the sandbox
    (by reference) is a file the sandbox's user cannot read.

    Checked once per (option set, module) that passed; ``__main__`` travels by value.
    """
    module = getattr(getattr(fn, "__func__", fn), "__module__", None)
    if not isinstance(module, str) or module == "__main__":
        return
    key = (options, module)
    if key in _modules_checked:
        return
    files = []
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        mod = sys.modules.get(".".join(parts[:i]))
        file = getattr(mod, "__file__", None)
        if isinstance(file, str) and os.path.isabs(file):
            files.append(file)
    if files:
        who = _identity(options)
        required, optional = needed_paths()
        for file in files:
            check_module_file(file, [*required, *optional], who)
    _modules_checked.add(key)


def _private_tmp(options: Any) -> list[str]:
    """/tmp and /var/tmp when the unit gets private ones (PrivateTmp=, or DynamicUser=,
    which implies it): code that lives there is hidden unless bound in."""
    private = _on(directive_value(options, "PrivateTmp"))
    if private or _bool(directive_value(options, "DynamicUser")):
        return ["/tmp", "/var/tmp"]
    return []


def reach_directives(
    options: Any,
    who: Identity | None = None,
    binder: Identity | None = None,
    host: HostFacts = UNKNOWN_HOST,
) -> tuple[list[Directive], Directive | None, tuple[str, ...], tuple[Exception, ...]]:
    """Extra directives that make the interpreter and code reachable (see :mod:`_reach`).

    ``who`` is the unit's identity when the caller knows it better than the
    directives say (rootless mode: the user manager's own uid); ``host`` the
    systemd it runs on (257's ``ProtectHome=`` seals ``/root``).
    """
    who = who or _identity(options)
    protect_home = directive_value(options, "ProtectHome")
    if isinstance(protect_home, bool):
        protect_home = "yes" if protect_home else "no"
    if protect_home is None and _bool(directive_value(options, "DynamicUser")):
        # systemd.exec(5): DynamicUser= implies ProtectHome=read-only (a 0700 home that
        # holds the interpreter must be bound in, or the unit fails with 203/EXEC).
        protect_home = "read-only"
    required, optional = needed_paths()
    r = plan(
        required,
        who,
        str(protect_home) if protect_home is not None else None,
        inaccessible=_strings(directive_value(options, "InaccessiblePaths")),
        temporary=[
            *_strings(directive_value(options, "TemporaryFileSystem")),
            *_private_tmp(options),
        ],
        optional=optional,
        binder=binder,
        sealed_root=host.seals_root,
    )
    extra = []
    if r.tmpfs or r.home_tmpfs:
        extra.append(
            Directive.of("TemporaryFileSystem", [*r.home_tmpfs, *(f"{p}:ro" for p in r.tmpfs)])
        )
    if r.binds:
        extra.append(Directive.of("BindReadOnlyPaths", list(r.binds)))
    replaced = Directive.of("ProtectHome", r.protect_home) if r.protect_home else None
    return extra, replaced, r.notes, r.unreachable


def merged_directives(
    options: Any,
    who: Identity | None = None,
    binder: Identity | None = None,
    host: HostFacts = UNKNOWN_HOST,
) -> tuple[list[Any], tuple[str, ...], tuple[Exception, ...]]:
    """The directives (the containment baseline already in: :func:`contained`) merged
    with the reachability ones and the stronger forms ``host`` offers, the notes
    explaining changes, and the optional code paths the sandbox cannot reach. ``env=``
    values are not among them: unit properties are readable by every unit over D-Bus,
    so they travel over the control channel (:mod:`sandboxed.runtime.channel`)."""
    extra, replaced, notes, unreachable = reach_directives(options, who, binder, host)
    offered, offer_notes = stronger(options.directives, host)
    extra = [*offered, *extra]
    notes = (*offer_notes, *notes)
    by_name: dict[str, Any] = {d.name: d for d in options.directives}
    if replaced is not None:
        by_name["ProtectHome"] = replaced
    for d in extra:
        if d.name in by_name:
            by_name[d.name] = by_name[d.name].merge(d)
        else:
            by_name[d.name] = d
    return list(by_name.values()), notes, unreachable


#: Directive -> the namespace kind (as in /proc/self/ns) the unit must then have.
_PROMISED_NAMESPACES = (
    ("PrivateNetwork", "net"),
    ("PrivateUsers", "user"),
    ("PrivateIPC", "ipc"),
    ("ProtectHostname", "uts"),
)


def contained(options: Any, rootless: UserManagerHost | None = None) -> Any:
    """``options`` with the containment baseline combined in (unless ``containment=False``).

    In a user manager, the baseline's directives that user managers do not support
    (``ProtectControlGroups=``: see :mod:`sandboxed.directives.rootless`) are left out:
    there the unit's processes are the caller's own uid, and its cgroup subtree is
    delegated to that user anyway.
    """
    if not getattr(options, "containment", True):
        return options
    skip = NOT_IN_USER_MANAGERS if rootless is not None else frozenset()
    return attrs.evolve(options, directives=tuple(baseline.apply(options.directives, skip)))


def guard_plan(options: Any, rootless: UserManagerHost | None = None) -> tuple[list[str], bool]:
    """(namespace kinds the worker must find its own, whether to install the signal
    filter) for the unit of ``options``, baseline included (see worker/guard.py)."""
    is_contained = bool(getattr(options, "containment", True))
    options = contained(options, rootless)
    kinds = [k for name, k in _PROMISED_NAMESPACES if _bool(directive_value(options, name))]
    if is_contained:
        kinds.append("mnt")  # the baseline's TemporaryFileSystem=/run makes one
    return kinds, is_contained


def unit_plan(
    options: Any, rootless: UserManagerHost | None = None, host: HostFacts = UNKNOWN_HOST
) -> tuple[list[Property], tuple[str, ...], tuple[Exception, ...]]:
    """(bus properties, notes on adjustments, unreachable optional code paths).

    ``rootless``: the user manager the unit will run in, if it is one; the
    options then take their rootless form (:mod:`sandboxed.runtime.rootless`),
    which raises :class:`UnenforceableDirectiveError` for what it cannot hold;
    so does a directive ``host`` cannot enforce (:mod:`sandboxed.directives.enforcement`),
    and one too new for its systemd or weakened on its cgroup layout
    (:mod:`sandboxed.directives.host`): both rule sets read the one record of
    ``host``'s facts (:mod:`sandboxed.runtime.facts`). The containment baseline is
    added to what the user asked for.
    """
    accepted = getattr(options, "accept_unenforced", ())
    refuse_unenforceable(options.directives, host, accepted)
    held = (
        [d.name for d in options.directives if setting_of(d.name) in baseline.BASELINE]
        if getattr(options, "containment", True)
        else []
    )
    refuse(options.directives, host, accepted, baseline=held)
    who = None
    rootless_notes: tuple[str, ...] = ()
    if rootless is not None:
        from sandboxed.runtime.rootless import caller_identity, rootless_options

        options, rootless_notes = rootless_options(options, rootless)
        uid, gids = caller_identity(rootless)
        who = Identity(uid, gids)
    options = contained(options, rootless)
    directives, notes, unreachable = merged_directives(options, who, binder=who, host=host)
    notes = (*rootless_notes, *notes)
    props = bus_properties(directives, getattr(options, "raw", ()) or ())
    names = {p[0] for p in props}
    if "TimeoutStopUSec" not in names:
        # The supervisor exits at once on SIGTERM; no need for systemd's 90 s default.
        props.append(("TimeoutStopUSec", "t", 5_000_000))
    return props, notes, unreachable


def directive_name(prop: str) -> str:
    """The unit-file name of a bus property (``CPUQuotaPerSecUSec`` -> ``CPUQuota``)."""
    try:
        for spec in DIRECTIVES.values():
            bus = getattr(spec, "bus_names", None) or ()
            names = bus if isinstance(bus, (tuple, list)) else (bus,)
            if prop in names and spec.name != prop:
                return f"{spec.name} (bus property {prop})"
    except Exception:  # noqa: BLE001 - naming is best effort
        pass
    return prop


def bind_code_dir(options: Any, code_dir: str) -> Any:
    """``options``, plus a read-only bind of ``code_dir`` if a private /tmp would hide it.

    Under ``PrivateTmp=`` the sandbox's /tmp and /var/tmp are new and empty, so
    code that lives there (a script, a test file) would be missing. Binding
    exactly that directory, read-only, grants nothing but reading that code.
    """
    private = options.get("PrivateTmp")
    real = os.path.realpath(code_dir)
    in_tmp = any(real == t or real.startswith(t + "/") for t in ("/tmp", "/var/tmp"))
    if private is None or not _on(private.value) or not in_tmp:
        return options
    old = options.get("BindReadOnlyPaths")
    bind = Directive.of("BindReadOnlyPaths", [real])
    merged = old.merge(bind) if old is not None else bind
    others = [d for d in options.directives if d.name != "BindReadOnlyPaths"]
    return attrs.evolve(options, directives=tuple(sorted([*others, merged], key=lambda d: d.name)))
