"""Presets: what each stands for, how they compose, and when they refuse to."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sandboxed._errors import (
    ConfigurationError,
    ConflictingDirectivesError,
    InvalidDirectiveValueError,
    UnknownDirectiveError,
)
from sandboxed.directives.directive import Directive
from sandboxed.directives.presets import (
    CPU,
    HARDENED_PENDING,
    PRESETS,
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

# -- what each preset stands for ------------------------------------------------------------

EXPECTED = [
    pytest.param(
        NoNetwork,
        [
            "InaccessiblePaths=-/run/systemd/resolve -/run/dbus/system_bus_socket -/run/nscd",
            "PrivateNetwork=yes",
            "RestrictAddressFamilies=AF_UNIX",
        ],
        {},
        id="NoNetwork",
    ),
    pytest.param(
        ReadOnly,
        [
            "CapabilityBoundingSet=~cap_dac_read_search cap_sys_admin",
            "PrivateDevices=yes",
            "PrivateTmp=yes",
            "ProtectHome=read-only",
            "ProtectSystem=strict",
        ],
        {},
        id="ReadOnly",
    ),
    pytest.param(PrivateTmp, ["PrivateTmp=yes"], {}, id="PrivateTmp"),
    pytest.param(SafeResults, [], {"safe_results": True}, id="SafeResults"),
    pytest.param(AsUser("nobody"), ["User=nobody"], {}, id="AsUser"),
    pytest.param(CPU(0.2), ["CPUQuota=20%"], {}, id="CPU-fraction"),
    pytest.param(CPU("150%"), ["CPUQuota=150%"], {}, id="CPU-percent"),
    pytest.param(Memory("512M"), ["MemoryMax=512M", "MemorySwapMax=0"], {}, id="Memory-no-swap"),
    pytest.param(Tasks(64), ["TasksMax=64"], {}, id="Tasks"),
    pytest.param(Timeout(5), [], {"timeout": 5.0}, id="Timeout-is-not-a-directive"),
]


@pytest.mark.parametrize(("preset", "lines", "options"), EXPECTED)
def test_each_preset_stands_for_exactly_its_directives_and_options(
    preset: Preset, lines: list[str], options: dict[str, object]
) -> None:
    assert preset.assignments() == lines
    assert dict(preset.options) == options


@pytest.mark.parametrize(
    ("preset", "text"),
    [
        pytest.param(NoNetwork, "NoNetwork", id="bare"),
        pytest.param(NoNetwork | ReadOnly, "NoNetwork | ReadOnly", id="composed"),
        pytest.param(ReadOnly | NoNetwork | ReadOnly, "ReadOnly | NoNetwork", id="deduplicated"),
        pytest.param(AsUser("nobody"), "AsUser('nobody')", id="AsUser"),
        pytest.param(CPU(0.2), "CPU(0.2)", id="CPU"),
        pytest.param(Memory("1G"), "Memory('1G')", id="Memory"),
        pytest.param(Timeout(2.5), "Timeout(2.5)", id="Timeout"),
    ],
)
def test_repr_names_the_presets_as_written(preset: Preset, text: str) -> None:
    assert repr(preset) == text


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(CPU(0.2), CPU("20%"), id="cpu"),
        pytest.param(Memory(512 * 2**20), Memory("512M"), id="memory"),
        pytest.param(Tasks("64"), Tasks(64), id="tasks"),
        pytest.param(Timeout(5), Timeout(5.0), id="timeout"),
    ],
)
def test_equivalent_spellings_make_equal_presets_with_equal_hashes(a: Preset, b: Preset) -> None:
    assert a == b
    assert hash(a) == hash(b)


def test_a_preset_exposes_its_directives_as_directive_values() -> None:
    assert NoNetwork.get("PrivateNetwork") == Directive.of("PrivateNetwork", True)
    assert NoNetwork.get("User") is None
    assert all(isinstance(d, Directive) for d in Hardened.directives)
    assert [d.name for d in Hardened.directives] == sorted(d.name for d in Hardened.directives)


def test_a_preset_names_the_parts_that_set_a_directive() -> None:
    combined = ReadOnly | PrivateTmp | NoNetwork
    assert combined.source_of("PrivateTmp") == "ReadOnly | PrivateTmp"
    assert combined.source_of("PrivateNetwork") == "NoNetwork"


def test_presets_can_be_defined_from_a_mapping_or_directives() -> None:
    a = Preset.define("Scratch", {"ReadWritePaths": "/srv/scratch"}, timeout=3)
    b = Preset.define("Scratch2", [Directive.parse("ReadWritePaths=/srv/scratch")], timeout=3.0)
    assert a == b
    assert repr(a) == "Scratch"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(lambda: Preset.define(""), ConfigurationError, id="empty-label"),
        pytest.param(
            lambda: Preset.define("X", {"CPUQuotaa": 1}), UnknownDirectiveError, id="name"
        ),
        pytest.param(
            lambda: Preset.define("X", {"CPUQuota": "lots"}), InvalidDirectiveValueError, id="value"
        ),
        pytest.param(lambda: Timeout(0), ConfigurationError, id="timeout-zero"),
        pytest.param(lambda: Timeout(float("inf")), ConfigurationError, id="timeout-inf"),
        pytest.param(lambda: Preset.define("X", workers=0), ConfigurationError, id="workers"),
        pytest.param(lambda: AsUser(""), InvalidDirectiveValueError, id="user"),
        pytest.param(lambda: Memory("much"), InvalidDirectiveValueError, id="memory"),
    ],
)
def test_bad_preset_arguments_are_refused_when_the_preset_is_made(
    call: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        call()  # type: ignore[operator]


# -- conflicts ------------------------------------------------------------------------------


def test_two_presets_disagreeing_on_a_scalar_raise_naming_directive_values_and_presets() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        AsUser("nobody") | AsUser("daemon")
    err = info.value
    assert err.directive == "User"
    assert set(err.values) == {"nobody", "daemon"}
    assert set(err.sources) == {"AsUser('nobody')", "AsUser('daemon')"}
    assert isinstance(err, ValueError)


def test_hardened_and_readonly_disagree_on_protecthome() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        Hardened | ReadOnly
    assert info.value.directive == "ProtectHome"
    assert set(info.value.values) == {"tmpfs", "read-only"}
    assert set(info.value.sources) == {"Hardened", "ReadOnly"}


def test_two_timeouts_conflict() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        Timeout(5) | Timeout(10)
    assert info.value.directive == "timeout"


def _p(label: str, **directives: object) -> Preset:
    return Preset.define(label, directives)


# (a, b, expected unit-file lines of the combination, or None when it must be refused)
MERGES = [
    pytest.param(
        _p("A", ReadWritePaths="/srv/a /srv/c"),
        _p("B", ReadWritePaths="/srv/b /srv/a"),
        ["ReadWritePaths=/srv/a /srv/b /srv/c"],
        id="paths-unite",
    ),
    pytest.param(
        _p("A", Environment={"X": "1"}),
        _p("B", Environment={"Y": "2", "X": "1"}),
        ["Environment=X=1 Y=2"],
        id="environment-unites",
    ),
    pytest.param(
        _p("A", Environment={"X": "1"}), _p("B", Environment={"X": "2"}), None, id="env-conflict"
    ),
    pytest.param(
        _p("A", SystemCallFilter="~@mount"),
        _p("B", SystemCallFilter="~@clock @mount"),
        ["SystemCallFilter=~@clock @mount"],
        id="syscall-deny-lists-unite",
    ),
    pytest.param(
        _p("A", SystemCallFilter="@system-service"),
        _p("B", SystemCallFilter="~@privileged"),
        ["SystemCallFilter=@system-service", "SystemCallFilter=~@privileged"],
        id="syscall-allow-minus-deny",
    ),
    pytest.param(
        _p("A", SystemCallFilter="@system-service"),
        _p("B", SystemCallFilter="@basic-io"),
        None,
        id="syscall-different-allow-groups-refused",
    ),
    pytest.param(
        _p("A", SystemCallFilter="~@mount"),
        _p("B", SystemCallFilter=((False, ("@clock",)), (True, ("@mount",)))),
        None,
        id="syscall-deny-then-allow-refused",
    ),
    pytest.param(
        _p("A", RestrictAddressFamilies="AF_UNIX AF_INET"),
        _p("B", RestrictAddressFamilies="AF_UNIX AF_NETLINK"),
        ["RestrictAddressFamilies=AF_UNIX"],
        id="families-allow-lists-intersect",
    ),
    pytest.param(
        _p("A", RestrictAddressFamilies="AF_UNIX AF_INET"),
        _p("B", RestrictAddressFamilies="~AF_INET"),
        ["RestrictAddressFamilies=AF_UNIX"],
        id="families-allow-minus-deny",
    ),
    pytest.param(
        _p("A", RestrictAddressFamilies="AF_INET"),
        _p("B", RestrictAddressFamilies="AF_UNIX"),
        None,
        id="families-disjoint-refused",
    ),
    pytest.param(
        _p("A", RestrictAddressFamilies="AF_INET"),
        _p("B", RestrictAddressFamilies="~AF_INET"),
        None,
        id="families-allow-minus-deny-leaving-nothing-refused",
    ),
    pytest.param(
        _p("A", CapabilityBoundingSet="CAP_NET_RAW CAP_CHOWN"),
        _p("B", CapabilityBoundingSet="~CAP_NET_RAW"),
        ["CapabilityBoundingSet=cap_chown"],
        id="capabilities-intersect",
    ),
    pytest.param(
        _p("A", RestrictNamespaces="~user"),
        _p("B", RestrictNamespaces="~net"),
        ["RestrictNamespaces=~net user"],
        id="namespaces-intersect",
    ),
    pytest.param(
        _p("A", RestrictNamespaces=True),
        _p("B", RestrictNamespaces="~net"),
        ["RestrictNamespaces=yes"],
        id="namespaces-restrict-all-wins",
    ),
    pytest.param(
        _p("A", AmbientCapabilities=""),
        _p("B", AmbientCapabilities="CAP_NET_BIND_SERVICE"),
        None,
        id="ambient-must-agree",
    ),
]


@pytest.mark.parametrize(("a", "b", "lines"), MERGES)
def test_list_valued_directives_combine_keeping_both_promises(
    a: Preset, b: Preset, lines: list[str] | None
) -> None:
    if lines is None:
        with pytest.raises(ConflictingDirectivesError) as info:
            a | b
        assert set(info.value.sources) == {"A", "B"}
        with pytest.raises(ConflictingDirectivesError):
            b | a
    else:
        assert (a | b).assignments() == lines
        assert (b | a).assignments() == lines


def test_refused_syscall_allow_lists_explain_why() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        _p("A", SystemCallFilter="@system-service") | _p("B", SystemCallFilter="@basic-io")
    assert "cannot do it faithfully" in " ".join(getattr(info.value, "__notes__", []))


# -- the algebra ------------------------------------------------------------------------------

_PATHS = st.lists(st.sampled_from(["/srv/a", "/srv/b", "/var/lib/x", "-/opt"]), max_size=3)
_FAMILIES = st.lists(st.sampled_from(["AF_INET", "AF_INET6", "AF_NETLINK"]), max_size=2)
_DENY = st.lists(st.sampled_from(["@mount", "@clock", "@debug", "@swap"]), min_size=1, max_size=3)


@st.composite
def atoms(draw: st.DrawFn) -> Preset:
    """Named presets that never conflict with each other (shared values agree or merge)."""
    kind = draw(st.integers(0, 9))
    n = draw(st.integers(0, 3))
    label = f"P{kind}_{n}"
    if kind == 0:
        return draw(st.sampled_from([NoNetwork, ReadOnly, PrivateTmp, SafeResults, Hardened]))
    if kind == 1:
        return _p(label, ReadWritePaths=draw(_PATHS))
    if kind == 2:
        return _p(label, RestrictAddressFamilies=["AF_UNIX", *draw(_FAMILIES)])
    if kind == 3:
        return _p(label, SystemCallFilter="~" + " ".join(draw(_DENY)))
    if kind == 4:
        return _p(label, Environment={f"V{draw(st.integers(0, 5))}": "same"})
    if kind == 5:
        return _p(label, InaccessiblePaths=draw(_PATHS))
    if kind == 6:
        caps = draw(st.lists(st.sampled_from(["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"])))
        return _p(label, CapabilityBoundingSet=("~" if n % 2 else "") + " ".join(caps))
    if kind == 7:
        spaces = draw(st.lists(st.sampled_from(["user", "net", "ipc"]), min_size=1))
        return _p(label, RestrictNamespaces="~" + " ".join(spaces))
    if kind == 8:
        return CPU(0.2) if n % 2 else Memory("1G")
    return Timeout(7)


def _compose(a: Preset, b: Preset) -> Preset | type[ConflictingDirectivesError]:
    try:
        return a | b
    except ConflictingDirectivesError:
        return ConflictingDirectivesError


@given(atoms())
def test_composition_is_idempotent(p: Preset) -> None:
    assert p | p == p
    assert repr(p | p) == repr(p)


@given(atoms(), atoms())
def test_composition_is_commutative(a: Preset, b: Preset) -> None:
    ab, ba = _compose(a, b), _compose(b, a)
    assert ab == ba
    if isinstance(ab, Preset):
        assert hash(ab) == hash(ba)


@given(atoms(), atoms(), atoms())
def test_composition_is_associative_including_its_refusals(a: Preset, b: Preset, c: Preset) -> None:
    left = _compose(a, b)
    left = _compose(left, c) if isinstance(left, Preset) else left
    right = _compose(b, c)
    right = _compose(a, right) if isinstance(right, Preset) else right
    # A refusal may surface at a different step, but then both groupings refuse.
    assert left == right


@given(atoms(), atoms())
def test_a_composition_is_at_least_as_strict_as_each_part(a: Preset, b: Preset) -> None:
    both = _compose(a, b)
    assume(isinstance(both, Preset))
    assert isinstance(both, Preset)
    for part in (a, b):
        for d in part.directives:
            merged = both.get(d.name)
            assert merged is not None
            mine: Any = d.value
            theirs: Any = merged.value
            if d.name == "RestrictAddressFamilies":
                assert mine[0][0] and theirs[0][0]
                assert set(theirs[0][1]) <= set(mine[0][1])
            elif d.name == "SystemCallFilter" and len(mine) == 1:
                assert set(mine[0][1]) <= set(theirs[-1][1])
            elif d.name in ("ReadWritePaths", "InaccessiblePaths", "Environment"):
                assert set(mine) <= set(theirs)
            elif not d.spec.list_valued:
                assert merged == d
        for name, value in part.options:
            assert both.option(name) == value


@given(st.sampled_from(["nobody", "daemon", "1000"]), st.sampled_from(["bin", "sys", "1001"]))
def test_any_two_different_users_conflict(u1: str, u2: str) -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        AsUser(u1) | AsUser(u2)
    assert info.value.directive == "User"


# -- Hardened -------------------------------------------------------------------------------


def test_hardened_has_every_directive_it_is_meant_to_have() -> None:
    assert HARDENED_PENDING == ()


def test_hardened_returns_results_as_plain_data_and_runs_as_a_dynamic_user() -> None:
    assert Hardened.option("safe_results") is True
    assert Hardened.get("DynamicUser") == Directive.of("DynamicUser", True)
    assert Hardened.get("User") is None
    assert Hardened.get("MemoryDenyWriteExecute") is None


def test_hardened_already_contains_nonetwork_and_privatetmp() -> None:
    assert Hardened | NoNetwork == Hardened
    assert Hardened | PrivateTmp == Hardened
    assert Hardened | SafeResults == Hardened


def _analyze_offline(preset: Preset, tmp_path: Path) -> float:
    unit = tmp_path / "sandboxed-score.service"
    unit.write_text(
        "[Service]\nExecStart=/usr/bin/python3 -c pass\n" + "\n".join(preset.assignments()) + "\n"
    )
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_hardened_scores_at_most_2_in_systemd_analyze_security(tmp_path: Path) -> None:
    # The offline assessment of the same directives; the live unit's score is
    # tested against a real manager in tests/security.
    score = _analyze_offline(Hardened, tmp_path)
    assert score <= 2.0
    assert score <= 0.3  # what the table in _presets.py predicts; a jump means a lost setting


# -- by name ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("Hardened", Hardened, id="plain"),
        pytest.param("hardened", Hardened, id="any-case"),
        pytest.param(" NoNetwork | ReadOnly ", NoNetwork | ReadOnly, id="pipe"),
        pytest.param("AsUser(nobody)", AsUser("nobody"), id="user"),
        pytest.param("AsUser('nobody')", AsUser("nobody"), id="user-quoted"),
        pytest.param("CPU(20%)", CPU(0.2), id="cpu"),
        pytest.param("Memory(512M)", Memory("512M"), id="memory"),
        pytest.param("Tasks(64)", Tasks(64), id="tasks"),
        pytest.param("Timeout(2.5)", Timeout(2.5), id="timeout"),
    ],
)
def test_presets_can_be_named_by_strings(spec: str, expected: Preset) -> None:
    assert preset_by_name(spec) == expected


def test_an_unknown_preset_name_lists_the_names_known() -> None:
    with pytest.raises(ConfigurationError) as info:
        preset_by_name("Harden")
    for name in [*PRESETS, "AsUser(...)", "Timeout(...)"]:
        assert name in str(info.value)


def test_a_bad_preset_argument_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        preset_by_name("Timeout(soon)")
    with pytest.raises(InvalidDirectiveValueError):
        preset_by_name("CPU(lots)")
