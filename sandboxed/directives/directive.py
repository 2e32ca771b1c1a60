"""systemd directives as values: the table, and the Directive and RawProperty value classes.

A :class:`Directive` is one unit-file setting (``CPUQuota=20%``) with its value
normalised once into a hashable normal form. It knows the D-Bus properties
``StartTransientUnit`` wants for it (``CPUQuotaPerSecUSec t 200000``), exactly
as ``systemd-run -p`` (systemd's ``src/shared/bus-unit-util.c``) would send
them, and its systemd spelling.

The table (:data:`DIRECTIVES`) has one :class:`DirectiveSpec` per directive a
transient service accepts on systemd 252; the value syntaxes live in
:mod:`sandboxed.directives.kinds` and :mod:`sandboxed.directives.values`. This module is pure:
no I/O, no D-Bus library; the properties are plain Python values in the
shapes jeepney serialises for their signatures.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from sandboxed._errors import InvalidDirectiveValueError, UnknownDirectiveError
from sandboxed.directives.kinds import Kind, Property, check_signature
from sandboxed.directives.table import BUS_SINCE, RESERVED, SINCE, TABLE
from sandboxed.directives.values import Invalid

__all__ = [
    "DIRECTIVES",
    "EX_BOOLEANS",
    "Directive",
    "DirectiveSpec",
    "Property",
    "RawProperty",
    "lookup",
    "setting_of",
]


@attrs.frozen
class DirectiveSpec:
    """What sandboxed knows about one directive.

    ``name`` is the unit-file spelling; ``bus_names`` the D-Bus properties it
    may set; ``signature`` the D-Bus signature of the main one; ``accepted``
    describes the accepted values; ``example`` is a value in systemd's
    spelling; ``section`` the man page it is documented in; ``reserved``, when
    not empty, is why sandboxed refuses the directive.
    """

    name: str
    kind: Kind
    bus_names: tuple[str, ...]
    section: str
    example: str
    doc: str = ""
    reserved: str = ""
    since: int = 0  # the systemd version that introduced it (0: systemd 252 has it)

    @property
    def signature(self) -> str:
        """The D-Bus signature of the main bus property."""
        return self.kind.signature

    @property
    def accepted(self) -> str:
        """A description of the accepted values."""
        return self.kind.accepted

    @property
    def list_valued(self) -> bool:
        """True when repeated values combine (:meth:`Directive.merge`) instead of conflicting."""
        return self.kind.merge is not None

    def needs(self, value: Any) -> int:
        """The systemd version this directive with normalised ``value`` needs (0: any)."""
        return max(self.since, self.kind.since(value))

    def bus_names_at(self, version: int) -> tuple[str, ...]:
        """The bus properties this directive may set on systemd ``version`` (0: unknown)."""
        return tuple(b for b in self.bus_names if not version or BUS_SINCE.get(b, 0) <= version)

    def convert(self, value: object) -> Hashable:
        """Normalise ``value``; raises :class:`InvalidDirectiveValueError`."""
        if self.reserved:
            raise InvalidDirectiveValueError(
                self.name, value, "nothing: sandboxed sets it itself", self.reserved
            )
        try:
            return self.kind.convert(value)
        except Invalid as exc:
            raise InvalidDirectiveValueError(self.name, value, self.accepted, str(exc)) from None

    def properties(self, value: Any) -> list[Property]:
        """The bus properties for a normalised value."""
        return self.kind.emit(self.bus_names[0], value)

    def render(self, value: Any) -> list[str]:
        """The value(s) in systemd's spelling, one per ``NAME=VALUE`` assignment needed."""
        return self.kind.render_all(value)


def _build() -> dict[str, DirectiveSpec]:
    table: dict[str, DirectiveSpec] = {}
    for section, rows in TABLE.items():
        for name, kind, bus, example, doc in rows:
            if name in table:
                raise AssertionError(f"{name} is in the table twice")
            names = (bus or name, *kind.extra_bus(bus or name))
            table[name] = DirectiveSpec(
                name, kind, names, section, example, doc, since=SINCE.get(name, 0)
            )
    for name, (section, kind, reason) in RESERVED.items():
        table[name] = DirectiveSpec(name, kind, (name,), section, "", "", reason)
    return table


#: Every directive, by its unit-file name.
DIRECTIVES: Mapping[str, DirectiveSpec] = MappingProxyType(_build())
_BY_LOWER = {name.lower(): name for name in DIRECTIVES}


def _spellings() -> dict[str, str]:
    # An ``…Ex`` directive is another spelling of the directive whose bus property it is
    # (PrivateTmpEx= of PrivateTmp=): both set one field of the unit, the later one wins.
    return {
        spec.name: spec.name[:-2]
        for spec in DIRECTIVES.values()
        if spec.name.endswith("Ex")
        and not spec.reserved
        and spec.name[:-2] in DIRECTIVES
        and spec.name in DIRECTIVES[spec.name[:-2]].bus_names
    }


#: The directives that are a second spelling of another (``PrivateTmpEx`` ->
#: ``PrivateTmp``): one setting, which systemd takes from whichever property comes last.
SPELLINGS: Mapping[str, str] = MappingProxyType(_spellings())

#: How the string spellings (``PrivateUsersEx=``) write the booleans of their directive.
EX_BOOLEANS: Mapping[str, bool] = MappingProxyType({"yes": True, "self": True, "no": False})


def setting_of(name: str) -> str:
    """The setting directive ``name`` spells: ``"PrivateTmp"`` for ``"PrivateTmpEx"``, else
    ``name``. Options are keyed by it, so that two spellings meet as one setting."""
    return SPELLINGS.get(name, name)


def lookup(name: str) -> DirectiveSpec:
    """The spec of directive ``name`` (its unit-file spelling, e.g. ``"CPUQuota"``).

    Raises :class:`UnknownDirectiveError` with the closest known names.
    """
    spec = DIRECTIVES.get(name)
    if spec is not None:
        return spec
    suggestions = difflib.get_close_matches(name, DIRECTIVES, n=3, cutoff=0.6)
    same_but_case = _BY_LOWER.get(name.lower())
    if same_but_case and same_but_case not in suggestions:
        suggestions.insert(0, same_but_case)
    if not suggestions:
        lowered = difflib.get_close_matches(name.lower(), _BY_LOWER, n=3, cutoff=0.6)
        suggestions = [_BY_LOWER[s] for s in lowered]
    raise UnknownDirectiveError(name, suggestions)


@attrs.frozen(repr=False)
class Directive:
    """One systemd directive with a normalised value, e.g. ``CPUQuota=20%``.

    Build with :meth:`of` or :meth:`parse`. Two Directives with the same
    meaning are equal and hash alike: ``Directive.of("CPUQuota", 0.2) ==
    Directive.of("CPUQuota", "20%")``.
    """

    name: str
    value: Hashable

    @classmethod
    def of(cls, name: str, value: object) -> Directive:
        """Directive ``name`` (unit-file spelling) with ``value`` in systemd's or Python's form.

        Raises :class:`UnknownDirectiveError` for an unknown name and
        :class:`InvalidDirectiveValueError` for a value the directive does not accept.
        """
        spec = lookup(name)
        return cls(spec.name, spec.convert(value))

    @classmethod
    def parse(cls, text: str) -> Directive:
        """``"CPUQuota=20%"`` → Directive; several lines of one directive are merged.

        Raises :class:`InvalidDirectiveValueError` when ``text`` is not an
        assignment, and what :meth:`of` raises.
        """
        result: Directive | None = None
        for line in text.splitlines() or [text]:
            m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9]*)\s*=(.*)", line, re.DOTALL)
            if not m:
                raise InvalidDirectiveValueError(
                    "?", text, "an assignment NAME=VALUE such as CPUQuota=20%", "no '='"
                )
            one = cls.of(m.group(1), m.group(2))
            result = one if result is None else result.merge(one)
        assert result is not None
        return result

    @property
    def spec(self) -> DirectiveSpec:
        """This directive's table entry."""
        return DIRECTIVES[self.name]

    def properties(self) -> list[Property]:
        """``(bus property name, D-Bus signature, value)`` triples for ``StartTransientUnit``."""
        return self.spec.properties(self.value)

    def canonical(self) -> Directive:
        """This setting in its directive's own spelling: ``PrivateTmpEx=yes`` is
        ``PrivateTmp=yes``, ``PrivateUsersEx=self`` is ``PrivateUsers=yes``; any other
        directive is itself.

        The own spelling sends a boolean as the ``b`` property every systemd has, and a
        named value (``disconnected``) as the ``…Ex`` one that systemd added with it:
        one property, the one the running systemd needs.
        """
        base = SPELLINGS.get(self.name)
        if base is None:
            return self
        value: object = self.value
        if isinstance(value, str):
            value = EX_BOOLEANS.get(value, value)
        return Directive.of(base, value)

    @property
    def needs(self) -> int:
        """The systemd version this directive and value need (0: every version sandboxed knows)."""
        return self.spec.needs(self.value)

    def assignments(self) -> list[str]:
        """The ``NAME=VALUE`` assignments (one per ``systemd-run -p`` option) for this value."""
        return [f"{self.name}={text}" for text in self.spec.render(self.value)]

    def merge(self, other: Directive) -> Directive:
        """This directive followed by ``other``, as two lines of a unit file combine.

        List-valued directives append (an empty value resets); filters such as
        ``SystemCallFilter=`` combine by systemd's allow/deny rules. Raises
        :class:`ValueError` for different directives or a directive whose
        values do not combine (there the later one would simply win).
        """
        if other.name != self.name:
            raise ValueError(f"cannot merge {self.name}= with {other.name}=")
        merge = self.spec.kind.merge
        if merge is None:
            raise ValueError(f"{self.name}= takes a single value; values do not combine")
        return Directive(self.name, merge(self.value, other.value))

    def __str__(self) -> str:
        """systemd's spelling, e.g. ``CPUQuota=20%`` (one line per assignment if several)."""
        return "\n".join(self.assignments())

    def __repr__(self) -> str:
        return f"Directive({self.name}={'; '.join(self.spec.render(self.value))!r})"


@attrs.frozen
class RawProperty:
    """An escape hatch: a bus property the table lacks, sent as given.

    ``value`` must fit ``signature`` (checked on construction, raises
    :class:`InvalidDirectiveValueError`); lists are stored as tuples so the
    property stays hashable.
    """

    name: str
    signature: str
    value: Hashable

    def __attrs_post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", self.name):
            raise InvalidDirectiveValueError(
                self.name, self.value, "a bus property name such as CPUQuotaPerSecUSec", "bad name"
            )
        try:
            frozen = check_signature(self.signature, self.value)
        except Invalid as exc:
            raise InvalidDirectiveValueError(
                self.name, self.value, f"a value of D-Bus signature {self.signature!r}", str(exc)
            ) from None
        object.__setattr__(self, "value", frozen)

    def properties(self) -> list[Property]:
        """The one ``(name, signature, value)`` triple; arrays as lists again."""
        from sandboxed.directives.kinds import thaw

        return [(self.name, self.signature, thaw(self.signature, self.value))]
