"""A directive and its ``…Ex`` spelling are one setting wherever options are combined.

systemd 257 takes ``PrivateTmp=``, ``PrivateUsers=`` and ``ProtectControlGroups=``
under two bus properties each (``PrivateTmp`` ``b`` and ``PrivateTmpEx`` ``s``) and
applies whichever comes last in one StartTransientUnit (measured for the baseline's
``PrivateUsers=``: tests/systemd/test_versions.py). Sent side by side, a user's
``PrivateTmpEx=no`` undid a preset's ``PrivateTmp=yes`` while ``describe()`` showed
the preset's. These tests hold each way options meet to one setting, one property.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxed import (
    ConflictingDirectivesError,
    Hardened,
    Preset,
    RawProperty,
    ReadOnly,
    TransientUnitPoolExecutor,
)
from sandboxed.api.executor import _pystemd_properties
from sandboxed.directives.directive import DIRECTIVES, SPELLINGS, Directive, setting_of
from sandboxed.directives.options import OptionSet

_PAIRS = sorted(SPELLINGS.items())


def _sent(options: OptionSet, setting: str) -> list[tuple[str, str, object]]:
    """The bus properties ``options`` sends for ``setting``, in either spelling."""
    spellings = set(DIRECTIVES[setting].bus_names)
    return [p for p in options.properties() if p[0] in spellings]


def test_the_ex_spellings_are_found_in_the_table() -> None:
    # Derived from the table, not listed by hand: a new …Ex directive joins by itself.
    assert dict(SPELLINGS) == {
        "PrivateTmpEx": "PrivateTmp",
        "PrivateUsersEx": "PrivateUsers",
        "ProtectControlGroupsEx": "ProtectControlGroups",
    }
    assert setting_of("PrivateTmpEx") == "PrivateTmp"
    assert setting_of("PrivateTmp") == "PrivateTmp"
    assert setting_of("ExecStartEx") == "ExecStartEx"  # refused anyway: not a spelling here


_EX_VALUES = [
    ("PrivateTmpEx", "yes", ("PrivateTmp", "b", True)),
    ("PrivateTmpEx", "no", ("PrivateTmp", "b", False)),
    ("PrivateTmpEx", "disconnected", ("PrivateTmpEx", "s", "disconnected")),
    ("PrivateUsersEx", "self", ("PrivateUsers", "b", True)),
    ("PrivateUsersEx", "no", ("PrivateUsers", "b", False)),
    ("PrivateUsersEx", "identity", ("PrivateUsersEx", "s", "identity")),
    ("PrivateUsersEx", "full", ("PrivateUsersEx", "s", "full")),
    ("ProtectControlGroupsEx", "yes", ("ProtectControlGroups", "b", True)),
    ("ProtectControlGroupsEx", "private", ("ProtectControlGroupsEx", "s", "private")),
    ("ProtectControlGroupsEx", "strict", ("ProtectControlGroupsEx", "s", "strict")),
]


@pytest.mark.parametrize(("name", "value", "prop"), _EX_VALUES, ids=lambda v: str(v))
def test_a_string_spelling_is_its_directive_in_its_own_spelling(
    name: str, value: str, prop: tuple[str, str, object]
) -> None:
    own = Directive.of(name, value).canonical()
    assert own.name == SPELLINGS[name]
    # A boolean as the b property every systemd has, a named value as the …Ex one.
    assert own.properties() == [prop]
    assert own.canonical() == own


def test_every_value_of_every_string_spelling_has_an_own_spelling() -> None:
    for name in SPELLINGS:
        kind = DIRECTIVES[name].kind
        named = [v for v, _ in kind.values_since] or []
        for value in ("yes", "no", *named, *DIRECTIVES[name].example.split()):
            own = Directive.of(name, value).canonical()
            assert len(own.properties()) == 1


# -- presets with keyword directives -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "prop", "override"),
    [
        ("no", ("PrivateTmp", "b", False), ("PrivateTmp", "yes", "no")),
        (
            "disconnected",
            ("PrivateTmpEx", "s", "disconnected"),
            ("PrivateTmp", "yes", "disconnected"),
        ),
        ("yes", ("PrivateTmp", "b", True), None),
    ],
    ids=["no", "disconnected", "yes"],
)
@pytest.mark.parametrize("preset", [ReadOnly, Hardened], ids=repr)
def test_a_keyword_in_the_other_spelling_overrides_the_presets_value_visibly(
    preset: Preset, value: str, prop: tuple[str, str, object], override: Any
) -> None:
    options = OptionSet.build(preset, PrivateTmpEx=value)
    assert _sent(options, "PrivateTmp") == [prop]  # one property, never both
    assert [d.name for d in options.directives].count("PrivateTmp") == 1
    assert "PrivateTmpEx" not in [d.name for d in options.directives]
    assert options.get("PrivateTmpEx") == options.get("PrivateTmp")
    overrides = [o for o in options.overrides if o[0] == "PrivateTmp"]
    assert overrides == ([override] if override else [])
    # What describe() says is what is sent.
    shown = [line.split()[0] for line in options.describe().splitlines() if "PrivateTmp" in line]
    assert shown[0] == f"PrivateTmp={value}"


def test_a_keyword_in_either_spelling_is_the_same_option_set() -> None:
    assert OptionSet.build(ReadOnly, PrivateTmpEx="no") == OptionSet.build(
        ReadOnly, PrivateTmp=False
    )
    assert OptionSet.build(PrivateUsersEx="self").key == OptionSet.build(PrivateUsers=True).key


def test_a_weakening_string_spelling_under_hardened_meets_the_baseline_as_written() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(Hardened, PrivateUsersEx="no")
    assert info.value.directive == "PrivateUsersEx"
    assert "PrivateUsersEx=no" in str(info.value)
    assert "containment baseline" in str(info.value)


def test_a_stronger_string_spelling_under_hardened_is_sent_alone() -> None:
    options = OptionSet.build(Hardened, ProtectControlGroupsEx="strict")
    assert _sent(options, "ProtectControlGroups") == [("ProtectControlGroupsEx", "s", "strict")]
    assert ("ProtectControlGroups", "yes", "strict") in options.overrides


# -- keyword with keyword ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"PrivateTmp": True}, {"PrivateTmpEx": "no"}),
        ({"PrivateTmpEx": "disconnected"}, {"PrivateTmp": True}),
        ({"PrivateUsers": "identity"}, {"PrivateUsersEx": "self"}),
        ({"ProtectControlGroupsEx": "strict"}, {"ProtectControlGroups": True}),
    ],
    ids=lambda kw: "=".join(map(str, next(iter(kw.items())))),
)
def test_both_spellings_with_different_values_conflict_naming_both_as_written(
    first: dict[str, object], second: dict[str, object]
) -> None:
    ((a, va),), ((b, vb),) = first.items(), second.items()
    for kw in ({**first, **second}, {"ns_options": first, **second}):
        with pytest.raises(ConflictingDirectivesError) as info:
            OptionSet.build(**kw, containment=False)  # type: ignore[arg-type]
        assert info.value.directive == setting_of(a)
        text = str(info.value)
        assert f"{a}={Directive.of(a, va).spec.render(Directive.of(a, va).value)[0]}" in text
        assert f"{b}={Directive.of(b, vb).spec.render(Directive.of(b, vb).value)[0]}" in text
        assert f"give {setting_of(a)}= once" in text


def test_both_spellings_with_one_value_are_one_directive_and_one_property() -> None:
    options = OptionSet.build(PrivateTmp=True, PrivateTmpEx="yes")
    assert _sent(options, "PrivateTmp") == [("PrivateTmp", "b", True)]
    options = OptionSet.build(PrivateUsers=True, ns_options={"PrivateUsersEx": "self"})
    assert _sent(options, "PrivateUsers") == [("PrivateUsers", "b", True)]
    options = OptionSet.build(
        Directive.of("PrivateTmpEx", "disconnected"), PrivateTmp="disconnected"
    )
    assert _sent(options, "PrivateTmp") == [("PrivateTmpEx", "s", "disconnected")]


# -- presets with presets ----------------------------------------------------------------

_MINE_NO = Preset.define("Mine", {"PrivateTmpEx": "no"})


def test_presets_in_two_spellings_that_disagree_conflict_naming_both_as_written() -> None:
    for composed in (lambda: ReadOnly | _MINE_NO, lambda: _MINE_NO | ReadOnly):
        with pytest.raises(ConflictingDirectivesError) as info:
            composed()
        assert info.value.directive == "PrivateTmp"
        assert set(info.value.values) == {"PrivateTmp=yes", "PrivateTmpEx=no"}
        assert set(info.value.sources) == {"ReadOnly", "Mine"}
    with pytest.raises(ConflictingDirectivesError):
        Preset.define(
            "Both", [Directive.of("PrivateTmp", True), Directive.of("PrivateTmpEx", "no")]
        )
    with pytest.raises(ConflictingDirectivesError):  # whatever the grouping
        (Preset.define("Scratch", {"ReadWritePaths": "/srv"}) | _MINE_NO) | ReadOnly


def test_presets_in_two_spellings_that_agree_are_one_directive() -> None:
    mine = Preset.define("Mine", {"PrivateTmpEx": "yes"})
    composed = ReadOnly | mine
    assert [d for d in composed.directives if setting_of(d.name) == "PrivateTmp"] == [
        Directive.of("PrivateTmp", True)
    ]
    # A preset holds the setting in its own spelling: equal whichever was written.
    assert mine == Preset.define("Other", {"PrivateTmp": True})
    assert mine.get("PrivateTmp") == mine.get("PrivateTmpEx") == Directive.of("PrivateTmp", True)
    assert _sent(OptionSet.build(composed), "PrivateTmp") == [("PrivateTmp", "b", True)]


def test_a_keyword_settles_presets_that_disagree_in_two_spellings() -> None:
    options = OptionSet.build(ReadOnly, _MINE_NO, PrivateTmpEx="disconnected")
    assert _sent(options, "PrivateTmp") == [("PrivateTmpEx", "s", "disconnected")]
    said = {n: str(was) for n, was, _ in options.overrides}["PrivateTmp"]
    assert set(said.split(" / ")) == {"yes", "no"}


# -- raw properties and the executor's dicts ---------------------------------------------


@pytest.mark.parametrize(
    ("kw", "raw"),
    [
        ({}, RawProperty("PrivateTmpEx", "s", "no")),  # ReadOnly's PrivateTmp=yes
        ({"PrivateTmpEx": "yes"}, RawProperty("PrivateTmp", "b", False)),
        ({"PrivateTmpEx": "disconnected"}, RawProperty("PrivateTmp", "b", False)),
    ],
    ids=["preset+raw-Ex", "Ex+raw-b", "Ex-named+raw-b"],
)
def test_a_raw_property_of_either_spelling_conflicts(
    kw: dict[str, object], raw: RawProperty
) -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(ReadOnly, raw=[raw], **kw)  # type: ignore[arg-type]
    assert info.value.directive == raw.name


def test_the_executors_properties_dict_and_ns_options_are_one_setting() -> None:
    directives, raw = _pystemd_properties({b"PrivateTmp": b"yes"})
    merged = {**directives, "PrivateTmpEx": "no"}
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(ns_options=merged, raw=raw)
    assert set(info.value.values) == {"PrivateTmp=yes", "PrivateTmpEx=no"}
    # Refused by the executor itself, before any unit exists.
    with pytest.raises(ConflictingDirectivesError):
        TransientUnitPoolExecutor({"PrivateTmp": True}, ns_options={"PrivateTmpEx": "no"})
    options = OptionSet.build(ReadOnly, ns_options={"PrivateTmpEx": "no"})
    assert _sent(options, "PrivateTmp") == [("PrivateTmp", "b", False)]


_SPELLED: list[dict[str, object]] = [
    {},
    {"PrivateTmpEx": "yes"},
    {"PrivateTmpEx": "no"},
    {"PrivateTmpEx": "disconnected"},
    {"PrivateUsersEx": "self"},
    {"ProtectControlGroupsEx": "strict"},
    {"PrivateTmp": True, "PrivateTmpEx": "yes"},
]


@pytest.mark.parametrize("kw", _SPELLED, ids=repr)
@pytest.mark.parametrize("preset", [None, ReadOnly, Hardened], ids=repr)
@pytest.mark.parametrize("containment", [True, False])
def test_no_option_set_sends_one_setting_twice(
    preset: Preset | None, kw: dict[str, object], containment: bool
) -> None:
    from sandboxed.runtime.plan import contained

    try:
        presets = [preset] if preset else []
        options = OptionSet.build(*presets, containment=containment, **kw)  # type: ignore[arg-type]
    except ConflictingDirectivesError:
        return  # refused: nothing is sent
    props = contained(options).properties()
    for setting in set(SPELLINGS.values()):
        names = set(DIRECTIVES[setting].bus_names)
        assert len([p for p in props if p[0] in names]) <= 1, (setting, props)


# -- the algebra, with both spellings ----------------------------------------------------

_SPELLING_ATOMS = st.sampled_from(
    [
        ReadOnly,
        Hardened,
        Preset.define("Tmp", {"PrivateTmp": True}),
        Preset.define("TmpEx", {"PrivateTmpEx": "yes"}),
        Preset.define("TmpExNo", {"PrivateTmpEx": "no"}),
        Preset.define("TmpNo", {"PrivateTmp": False}),
        Preset.define("TmpExDisc", {"PrivateTmpEx": "disconnected"}),
        Preset.define("UsersEx", {"PrivateUsersEx": "self"}),
        Preset.define("Users", {"PrivateUsers": True}),
    ]
)


def _compose(a: Preset, b: Preset) -> Preset | type[ConflictingDirectivesError]:
    try:
        return a | b
    except ConflictingDirectivesError:
        return ConflictingDirectivesError


@given(_SPELLING_ATOMS, _SPELLING_ATOMS, _SPELLING_ATOMS)
def test_composition_over_both_spellings_is_associative_and_commutative(
    a: Preset, b: Preset, c: Preset
) -> None:
    assert _compose(a, b) == _compose(b, a)
    left = _compose(a, b)
    left = _compose(left, c) if isinstance(left, Preset) else left
    right = _compose(b, c)
    right = _compose(a, right) if isinstance(right, Preset) else right
    assert left == right
    if isinstance(left, Preset):
        settings = [setting_of(d.name) for d in left.directives]
        assert len(settings) == len(set(settings))  # each setting once
        assert not any(d.name in SPELLINGS for d in left.directives)  # in its own spelling


def test_one_directive_under_a_bytes_and_a_str_key_of_the_properties_dict_conflicts() -> None:
    # Two keys of the dict, one directive: refused, not the last one winning.
    from sandboxed import ConfigurationError

    with pytest.raises(ConfigurationError, match="PrivateNetwork is given twice"):
        _pystemd_properties({b"PrivateNetwork": True, "PrivateNetwork": False})
    # The same value twice says one thing: accepted.
    directives, _raw = _pystemd_properties({b"PrivateTmp": b"yes", "PrivateTmp": "yes"})
    assert directives == {"PrivateTmp": "yes"}
