"""The option set of a sandbox: presets, directives and sandboxed's own options, normalised.

:meth:`OptionSet.build` takes what ``@sandboxed(...)`` and the executor take —
presets, keyword directives, an ``ns_options`` dict, raw bus properties and
sandboxed's options — and returns one frozen, hashable value. Two option sets
that mean the same are equal, whatever the order of the presets and however
the values were spelled; their :attr:`OptionSet.key` is the same in every
process. Keyword directives override presets, and each override is recorded
in :attr:`OptionSet.overrides` and shown by ``repr()``. A directive and its
``…Ex`` spelling (``PrivateTmp=``, ``PrivateTmpEx=``) are one setting wherever
options meet (:func:`~sandboxed.directives.directive.setting_of`), and the
option set holds it once, in the directive's own spelling, which travels as one
bus property.

This module is pure (it reads ``os.environ`` only for ``env=`` names).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from sandboxed._errors import (
    ConfigurationError,
    ConflictingDirectivesError,
    UnknownDirectiveError,
)
from sandboxed.directives import containment as baseline
from sandboxed.directives.checks import check as check_values
from sandboxed.directives.directive import (
    Directive,
    Property,
    RawProperty,
    lookup,
    setting_of,
)
from sandboxed.directives.presets import (
    Preset,
    byte_budget,
    factory_example,
    normalise_option,
    preset_by_name,
)

__all__ = ["OPTION_NAMES", "OptionSet"]

#: sandboxed's own keyword options (everything else is a systemd directive).
OPTION_NAMES: Final = (
    "accept_unenforced",
    "accounting",
    "containment",
    "env",
    "log_prefix",
    "max_decoded",
    "max_payload",
    "ns_options",
    "raw",
    "raw_output",
    "safe_results",
    "timeout",
    "trusted",
    "workers",
)

_UNSET: Final[Any] = object()
_PRESET_OPTIONS: Final = ("timeout", "safe_results", "workers", "max_payload")
_KEY_VERSION: Final = "sandboxed-options-1"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOGGER_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
DEFAULT_LOG_PREFIX: Final = "sandboxed.remote"


def _log_prefix(value: object) -> str:
    if value is None:
        return DEFAULT_LOG_PREFIX
    if not isinstance(value, str) or len(value) > 100 or not _LOGGER_NAME.fullmatch(value):
        raise ConfigurationError(
            f"invalid log_prefix {value!r}; accepted: a dotted logger name of words of "
            "[A-Za-z0-9_-], at most 100 characters, such as 'myapp.sandbox'"
        )
    return value


def _max_decoded(value: object) -> int | None:
    return byte_budget("max_decoded", value)


def _directive(name: str, value: object) -> Directive:
    """Directive.of, with sandboxed's own option names among the suggestions."""
    try:
        return Directive.of(name, value)
    except UnknownDirectiveError as exc:
        ours = difflib.get_close_matches(name.lower(), OPTION_NAMES, n=2, cutoff=0.6)
        raise UnknownDirectiveError(name, [*ours, *exc.suggestions][:4]) from None


def _env(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    pairs: dict[str, str] = {}
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, Iterable):
        names = [value] if isinstance(value, str) else list(value)
        missing = [n for n in names if n not in os.environ]
        if missing:
            raise ConfigurationError(
                f"env names {', '.join(map(repr, missing))}, which the caller's environment "
                "does not have; pass env={'NAME': 'value'} to give a value"
            )
        items = [(n, os.environ[n]) for n in names]
    else:
        raise ConfigurationError(
            f"invalid env {value!r}; accepted: a dict NAME -> str, or a list of names "
            "to copy from the caller's environment"
        )
    for name, val in items:
        if not _ENV_NAME.fullmatch(name) or not isinstance(val, str) or "\0" in val:
            raise ConfigurationError(
                f"invalid env entry {name!r}={val!r}; accepted: a NAME matching "
                "[A-Za-z_][A-Za-z0-9_]* and a str value without NUL"
            )
        pairs[name] = val
    return tuple(sorted(pairs.items()))


def _spelled(d: Directive) -> str:
    return "; ".join(d.spec.render(d.value))


def _shown(a: Directive, b: Directive) -> tuple[str, str]:
    """Two values of one setting for a message: with their names if spelled differently."""
    return (str(a), str(b)) if a.name != b.name else (_spelled(a), _spelled(b))


@attrs.frozen(repr=False)
class OptionSet:
    """Everything that defines a sandbox, normalised; hashable, the key of the unit cache.

    Build it with :meth:`build`. Equality covers :attr:`directives`,
    :attr:`raw`, :attr:`timeout`, :attr:`safe_results`, :attr:`workers`,
    :attr:`max_payload` and :attr:`env`; the names of the presets and the record of overrides are
    informative only.
    """

    #: The effective systemd directives, sorted by name.
    directives: tuple[Directive, ...]
    #: Bus properties passed as given (the escape hatch), sorted.
    raw: tuple[RawProperty, ...] = ()
    #: Seconds one call may run, or None. Per call: not part of :attr:`key`.
    timeout: float | None = None
    #: Decode results with the plain-data codec, never unpickle them (untrusted code).
    safe_results: bool = False
    #: Calls one unit runs in parallel, or None for sandboxed's default.
    workers: int | None = None
    #: The largest call or result in bytes, or None for sandboxed's default.
    max_payload: int | None = None
    #: Environment variables given to the worker, as sorted (name, value) pairs.
    env: tuple[tuple[str, str], ...] = ()
    #: Read each call's figures from the unit's cgroup (``fn.last_stats``). Off saves
    #: a few file reads per call (~20-40 us) for hot functions. Per call: not in :attr:`key`.
    accounting: bool = True
    #: The containment baseline (:mod:`sandboxed.directives.containment`) is added to
    #: the unit. ``containment=False`` is the one way to turn it off.
    containment: bool = True
    #: Directives accepted although this host cannot enforce them: True for all, or
    #: their names (see :mod:`sandboxed.directives.enforcement`).
    accept_unenforced: bool | tuple[str, ...] = ()
    #: Safe mode: the most memory a decoded result may take, in bytes, or None for the
    #: proportional budget alone (64 times the bytes received).
    max_decoded: int | None = None
    #: The caller's logger under which the sandbox's log records land.
    log_prefix: str = DEFAULT_LOG_PREFIX
    #: Write the sandbox's output to a terminal as it is, escape sequences included.
    raw_output: bool = False
    #: The presets it was built from, as written (``NoNetwork | ReadOnly``).
    presets: str = attrs.field(default="", eq=False)
    #: ``(name, preset value, keyword value)`` for each keyword that replaced a preset's value.
    overrides: tuple[tuple[str, object, object], ...] = attrs.field(default=(), eq=False)
    #: ``(directive name, where it came from)``: a preset's name, "keyword" or "ns_options".
    origins: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False)

    @classmethod
    def build(
        cls,
        *presets: Preset | str | Directive,
        ns_options: Mapping[str, object] | None = None,
        timeout: float | None = _UNSET,
        safe_results: bool | None = _UNSET,
        trusted: bool | None = _UNSET,
        workers: int | None = _UNSET,
        max_payload: int | str | None = _UNSET,
        env: Mapping[str, str] | Iterable[str] | None = None,
        raw: Iterable[RawProperty] = (),
        accounting: bool = True,
        containment: bool = True,
        accept_unenforced: bool | Iterable[str] = (),
        max_decoded: int | str | None = None,
        log_prefix: str | None = None,
        raw_output: bool = False,
        **directives: object,
    ) -> OptionSet:
        """The option set of ``@sandboxed(*presets, **directives)``.

        ``presets`` are :class:`Preset` values, preset names (``"Hardened"``)
        or :class:`Directive` values; ``directives`` are systemd directives in
        their unit-file spelling (``CPUQuota=0.2``), and so are the keys of
        ``ns_options`` (concurrentd's style). Those explicit directives win
        over the presets' values, visibly (:attr:`overrides`). ``trusted=False``
        is ``safe_results=True``. ``env`` is a dict of variables, or names to
        copy from the caller's environment now. ``max_decoded`` caps the memory a
        safe-mode result may take decoded; ``log_prefix`` names the caller's logger
        under which the sandbox's records land (``sandboxed.remote``); ``raw_output``
        writes the sandbox's output to a terminal without escaping control characters.

        Raises :class:`UnknownDirectiveError` (with close names, sandboxed's
        options included), :class:`InvalidDirectiveValueError`,
        :class:`ConflictingDirectivesError` (two presets disagree, or a
        keyword and ``ns_options`` do) and :class:`ConfigurationError`.
        """
        if not isinstance(containment, bool):
            raise ConfigurationError(
                f"invalid containment {containment!r}; accepted: True (the baseline every "
                "sandbox gets, the default) or False (none of it: docs/security.md)"
            )
        accepted = _accept_unenforced(accept_unenforced)
        if not isinstance(accounting, bool):
            raise ConfigurationError(
                f"invalid accounting {accounting!r}; accepted: True (per-call figures) or False"
            )
        if not isinstance(raw_output, bool):
            raise ConfigurationError(
                f"invalid raw_output {raw_output!r}; accepted: True (output as it is) or False"
            )
        chosen: list[Preset] = []
        # By setting: PrivateTmpEx= given beside PrivateTmp= is the same setting given twice.
        explicit: dict[str, tuple[Directive, str]] = {}

        def add_explicit(d: Directive, where: str) -> None:
            key = setting_of(d.name)
            if key in explicit and explicit[key][0].canonical() != d.canonical():
                seen, seen_where = explicit[key]
                raise ConflictingDirectivesError(key, _shown(seen, d), (seen_where, where))
            explicit[key] = (d, where)

        for p in presets:
            if isinstance(p, Directive):
                add_explicit(p, "positional")
                continue
            if isinstance(p, str):
                p = preset_by_name(p)
            if not isinstance(p, Preset):
                example = factory_example(p)
                if example is not None:
                    raise ConfigurationError(
                        f"{getattr(p, '__name__', p)} is a preset constructor and needs its "
                        f"argument: write {example}"
                    )
                raise ConfigurationError(
                    f"{p!r} is not a preset; accepted positionally: a Preset such as "
                    "NoNetwork, a preset name, or a Directive"
                )
            chosen.append(p)

        given: dict[str, object] = {
            "timeout": timeout,
            "safe_results": safe_results,
            "trusted": trusted,
            "workers": workers,
            "max_payload": max_payload,
        }
        for name, value in (ns_options or {}).items():
            if name in given:
                given[name] = value
            else:
                add_explicit(_directive(name, value), "ns_options")
        for name, value in directives.items():
            add_explicit(_directive(name, value), "keyword")
        if given["trusted"] not in (_UNSET, None):
            if not isinstance(given["trusted"], bool):
                raise ConfigurationError(f"invalid trusted {trusted!r}; accepted: True or False")
            as_safe = not given["trusted"]
            if given["safe_results"] not in (_UNSET, None, as_safe):
                raise ConfigurationError(
                    f"trusted={given['trusted']!r} contradicts safe_results="
                    f"{given['safe_results']!r}; give only one of them"
                )
            given["safe_results"] = as_safe

        # What is given explicitly is taken out of every preset before they are
        # composed: a keyword settles even a disagreement between presets.
        taken = {*explicit, *(n for n in _PRESET_OPTIONS if given[n] is not _UNSET)}
        base = Preset.define("(none)")
        for i, p in enumerate(chosen):
            base = p.without(taken) if i == 0 else base | p.without(taken)
        labels = " | ".join(dict.fromkeys(n for p in chosen for n in p.names))

        effective = {d.name: d for d in base.directives}
        origins = {d.name: base.source_of(d.name) for d in base.directives}
        overrides: list[tuple[str, object, object]] = []
        # As the user spelled them, for the baseline's message (PrivateUsersEx=no).
        written = dict(effective)
        for name, (d, where) in sorted(explicit.items()):
            said = _said(chosen, name)
            if said and said != _spelled(d.canonical()):
                overrides.append((name, said, _spelled(d.canonical())))
            effective[name] = d.canonical()
            written[name] = d
            origins[name] = where

        final: dict[str, Any] = dict.fromkeys(_PRESET_OPTIONS)
        final.update(base.options)
        for name in _PRESET_OPTIONS:
            if given[name] is _UNSET:
                continue
            value = normalise_option(name, given[name])
            said = _said(chosen, name)
            if said and said != repr(value):
                overrides.append((name, _option_said(chosen, name), value))
            final[name] = value

        check_values(effective.values())
        if containment:
            # Refused here, before any unit exists: a value that would weaken the baseline.
            baseline.check(written.values())
            raw_props = _raw(raw, {**baseline.ADDED, **effective})
        else:
            raw_props = _raw(raw, effective)
        return cls(
            directives=tuple(effective[k] for k in sorted(effective)),
            raw=raw_props,
            timeout=final["timeout"],
            safe_results=bool(final["safe_results"]),
            workers=final["workers"],
            max_payload=final["max_payload"],
            env=_env(env),
            accounting=accounting,
            containment=containment,
            accept_unenforced=accepted,
            max_decoded=_max_decoded(max_decoded),
            log_prefix=_log_prefix(log_prefix),
            raw_output=raw_output,
            presets=labels,
            overrides=tuple(overrides),
            origins=tuple(sorted(origins.items())),
        )

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Directive | None:
        """The directive ``name`` (unit-file spelling) if set, else None; either spelling
        of a setting finds it, in the directive's own (``get("PrivateTmpEx")`` is
        ``PrivateTmp=...``).

        Raises :class:`UnknownDirectiveError` for a name systemd does not know.
        """
        canonical = setting_of(lookup(name).name)
        return next((d for d in self.directives if d.name == canonical), None)

    @property
    def user(self) -> str | None:
        """``User=`` as given (a name or a numeric id as text), or None."""
        d = self.get("User")
        return None if d is None else str(d.value)

    @property
    def dynamic_user(self) -> bool:
        """Whether ``DynamicUser=yes``: the unit runs as a uid allocated when it starts."""
        d = self.get("DynamicUser")
        return bool(d is not None and d.value)

    def properties(self) -> list[Property]:
        """The ``(name, signature, value)`` bus properties of the directives asked for.

        A sandbox's unit gets these, plus what its plan adds so that the worker can
        start (:func:`sandboxed.runtime.plan.unit_plan`, which builds on this).
        """
        return bus_properties(self.directives, self.raw)

    @functools.cached_property
    def key(self) -> str:  # cached: the registry looks it up on every call
        """A 16-hex-digit digest of what shapes the unit, equal in every process.

        It covers the directives, raw properties, ``safe_results``, ``workers``,
        ``max_payload`` and ``env`` (values included: do not put low-entropy secrets in
        ``env``, the key may end up in a unit name) — everything but the
        per-call ``timeout``, so calls that differ only in their timeout can
        share a unit.
        """
        lines = [_KEY_VERSION]
        lines += [line for d in self.directives for line in d.assignments()]
        lines += [f"raw {r.name} {r.signature} {r.value!r}" for r in self.raw]
        lines += [f"safe_results {self.safe_results}", f"workers {self.workers}"]
        # What the caller does with what comes back (added only when set, so that the
        # keys of option sets without them stay as they were).
        if self.max_decoded is not None:
            lines.append(f"max_decoded {self.max_decoded}")
        if self.log_prefix != DEFAULT_LOG_PREFIX:
            lines.append(f"log_prefix {self.log_prefix}")
        if self.raw_output:
            lines.append("raw_output True")
        lines += [f"max_payload {self.max_payload}"]
        lines += [f"env {name}={value!r}" for name, value in self.env]
        if not self.containment:
            lines.append("containment False")
        if self.accept_unenforced:
            lines.append(f"accept_unenforced {self.accept_unenforced!r}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """A readable, multi-line account: each directive with its origin, then the options."""
        origin = dict(self.origins)
        out = [f"presets: {self.presets or '(none)'}"]
        for d in self.directives:
            for line in d.assignments():
                out.append(f"  {line}  [{origin.get(d.name, '?')}]")
        out += [f"  raw {r.name} ({r.signature}) = {r.value!r}" for r in self.raw]
        for name, was, now in self.overrides:
            out.append(f"override: {name}: {was!r} -> {now!r}")
        out.append(
            f"timeout={self.timeout!r} safe_results={self.safe_results!r} "
            f"workers={self.workers!r} max_payload={self.max_payload!r} "
            f"env={[n for n, _ in self.env]!r} key={self.key}"
        )
        if self.containment:
            out.append("containment: the baseline is added (docs/security.md)")
        else:
            out.append("containment=False: NO containment baseline (docs/security.md)")
        if self.accept_unenforced:
            out.append(f"accept_unenforced={self.accept_unenforced!r}")
        return "\n".join(out)

    def __repr__(self) -> str:
        origin = dict(self.origins)
        parts = [self.presets] if self.presets else []
        parts += [
            f"{d.name}={_spelled(d)!r}"
            for d in self.directives
            if origin.get(d.name) in ("keyword", "ns_options", "positional")
        ]
        parts += [f"raw={[r.name for r in self.raw]!r}"] if self.raw else []
        for name in ("timeout", "safe_results", "workers", "max_payload", "max_decoded"):
            value = getattr(self, name)
            if value not in (None, False):
                parts.append(f"{name}={value!r}")
        if self.log_prefix != DEFAULT_LOG_PREFIX:
            parts.append(f"log_prefix={self.log_prefix!r}")
        if self.raw_output:
            parts.append("raw_output=True")
        if self.env:
            parts.append(f"env={[n for n, _ in self.env]!r}")
        if not self.containment:
            parts.append("containment=False")
        if self.accept_unenforced:
            parts.append(f"accept_unenforced={self.accept_unenforced!r}")
        if self.overrides:
            shown = ", ".join(f"{n}: {a!r} -> {b!r}" for n, a, b in self.overrides)
            parts.append(f"overrides=[{shown}]")
        return f"OptionSet({', '.join(parts)})"


def _accept_unenforced(value: object) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Iterable):
        raise ConfigurationError(
            f"invalid accept_unenforced {value!r}; accepted: True (every directive), or "
            "the names of the directives to accept unenforced, e.g. ['SocketBindDeny']"
        )
    return tuple(sorted({lookup(str(n).rstrip("=")).name for n in names}))


def _said(presets: Iterable[Preset], name: str) -> str:
    """What the presets say about ``name``: one value, or several joined by `` / ``."""
    values = dict.fromkeys(v for p in presets for v in p.said(name).split(" / ") if v)
    return " / ".join(values)


def _option_said(presets: Iterable[Preset], name: str) -> object:
    values = {p.option(name) for p in presets} - {None}
    return values.pop() if len(values) == 1 else _said(presets, name)


def _raw(raw: Iterable[RawProperty], effective: Mapping[str, Directive]) -> tuple[RawProperty, ...]:
    by_name: dict[str, RawProperty] = {}
    # Every bus property a directive may travel as (PrivateUsers and PrivateUsersEx are
    # one setting): a raw property of either spelling would be applied over it.
    taken = {
        name: d
        for d in effective.values()
        for name in (*(p[0] for p in d.properties()), *d.spec.bus_names)
    }
    for r in raw:
        if not isinstance(r, RawProperty):
            raise ConfigurationError(
                f"raw= takes RawProperty values, got {r!r}; accepted: "
                "RawProperty(name, signature, value)"
            )
        if r.name in taken:
            d = taken[r.name]
            raise ConflictingDirectivesError(
                r.name, (_spelled(d), repr(r.value)), (f"{d.name}=", "raw")
            )
        if r.name in by_name and by_name[r.name] != r:
            raise ConflictingDirectivesError(
                r.name, (repr(by_name[r.name].value), repr(r.value)), ("raw", "raw")
            )
        by_name[r.name] = r
    return tuple(by_name[k] for k in sorted(by_name))


def bus_properties(
    directives: Iterable[Directive], raw: Iterable[RawProperty] = ()
) -> list[Property]:
    """The bus properties of ``directives`` then ``raw``, in that order."""
    props = [p for d in directives for p in d.properties()]
    props.extend(p for r in raw for p in r.properties())
    return props
