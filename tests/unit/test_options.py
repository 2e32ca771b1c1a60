"""OptionSet: one normalised, hashable value per sandbox, built from presets and keywords."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxed._errors import (
    ConfigurationError,
    ConflictingDirectivesError,
    InvalidDirectiveValueError,
    UnknownDirectiveError,
)
from sandboxed.directives.directive import Directive, RawProperty
from sandboxed.directives.options import OptionSet
from sandboxed.directives.presets import (
    CPU,
    AsUser,
    Hardened,
    NoNetwork,
    PrivateTmp,
    ReadOnly,
    Timeout,
)

SEED = {
    "PrivateTmp": True,
    "PrivateNetwork": True,
    "CPUQuota": 0.2,
    "ProtectSystem": "strict",
    "User": "nobody",
}

# -- equality ---------------------------------------------------------------------------------

SAME = [
    pytest.param(
        lambda: OptionSet.build(NoNetwork, ReadOnly, CPUQuota=0.2),
        lambda: OptionSet.build(ReadOnly, NoNetwork, CPUQuota="20%"),
        id="preset-order-and-cpu-spelling",
    ),
    pytest.param(
        lambda: OptionSet.build(ns_options=SEED),
        lambda: OptionSet.build(
            PrivateTmp=True,
            PrivateNetwork="yes",
            CPUQuota="20%",
            ProtectSystem="strict",
            User="nobody",
        ),
        id="ns_options-dict-equals-keywords",
    ),
    pytest.param(
        lambda: OptionSet.build(NoNetwork | ReadOnly),
        lambda: OptionSet.build("ReadOnly", "NoNetwork"),
        id="composed-equals-positional-names",
    ),
    pytest.param(
        lambda: OptionSet.build(CPU(0.2), MemoryMax="1G"),
        lambda: OptionSet.build(Directive.parse("MemoryMax=1024M"), CPUQuota=0.2),
        id="preset-equals-keyword-equals-directive",
    ),
    pytest.param(
        lambda: OptionSet.build(trusted=False),
        lambda: OptionSet.build(safe_results=True),
        id="trusted-false-is-safe-results",
    ),
    pytest.param(
        lambda: OptionSet.build(Hardened, ProtectHome="read-only"),
        lambda: OptionSet.build(
            *[d for d in Hardened.directives if d.name != "ProtectHome"],
            ProtectHome="read-only",
            safe_results=True,
        ),
        id="overrides-do-not-change-identity",
    ),
]


@pytest.mark.parametrize(("make_a", "make_b"), SAME)
def test_equal_meaning_gives_equal_option_sets_hashes_and_keys(
    make_a: object, make_b: object
) -> None:
    a, b = make_a(), make_b()  # type: ignore[operator]
    assert a == b
    assert hash(a) == hash(b)
    assert a.key == b.key


DIFFERENT = [
    pytest.param({"CPUQuota": 0.2}, {"CPUQuota": 0.3}, id="directive-value"),
    pytest.param({"User": "nobody"}, {}, id="directive-present"),
    pytest.param({"workers": 2}, {"workers": 3}, id="workers"),
    pytest.param({"safe_results": True}, {}, id="safe-results"),
    pytest.param({"env": {"A": "1"}}, {"env": {"A": "2"}}, id="env"),
    pytest.param({"max_payload": "1M"}, {}, id="max-payload"),
    pytest.param(
        {"raw": [RawProperty("CPUWeight", "t", 50)]},
        {"raw": [RawProperty("CPUWeight", "t", 60)]},
        id="raw",
    ),
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_sandboxes_get_different_keys(a: dict[str, object], b: dict[str, object]) -> None:
    x, y = OptionSet.build(**a), OptionSet.build(**b)  # type: ignore[arg-type]
    assert x != y
    assert x.key != y.key


def test_a_different_timeout_is_a_different_option_set_but_the_same_unit_key() -> None:
    a, b = OptionSet.build(NoNetwork, timeout=5), OptionSet.build(NoNetwork, timeout=10)
    assert a != b
    assert a.key == b.key


def test_the_key_is_short_hex_and_stable_across_processes() -> None:
    here = OptionSet.build(Hardened, NoNetwork, CPUQuota=0.2, User="nobody", env={"A": "1"})
    code = textwrap.dedent(
        """
        from sandboxed.directives.options import OptionSet
        from sandboxed.directives.presets import Hardened, NoNetwork
        print(OptionSet.build(NoNetwork, Hardened, CPUQuota="20%", User="nobody",
                              env={"A": "1"}).key)
        """
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert keys == {here.key}
    assert len(here.key) == 16
    assert int(here.key, 16) >= 0


_PRESET_POOL = [NoNetwork, ReadOnly, PrivateTmp, AsUser("nobody"), Timeout(3)]
_CPU_SPELLINGS = {0.2: ["20%", 0.2, " 20% "], 1.0: ["100%", 1.0, 1], 1.5: ["150%", " 150% "]}


@given(
    st.lists(st.sampled_from(_PRESET_POOL), min_size=1, max_size=5, unique_by=repr),
    st.randoms(use_true_random=False),
    st.sampled_from(sorted(_CPU_SPELLINGS)),
    st.data(),
)
def test_order_of_presets_and_spelling_of_values_never_matter(
    presets: list[object], rnd: object, cpu: float, data: st.DataObject
) -> None:
    shuffled = list(presets)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    s1, s2 = (data.draw(st.sampled_from(_CPU_SPELLINGS[cpu])) for _ in range(2))
    a = OptionSet.build(*presets, CPUQuota=s1)  # type: ignore[arg-type]
    b = OptionSet.build(*shuffled, CPUQuota=s2)  # type: ignore[arg-type]
    assert a == b
    assert hash(a) == hash(b)
    assert a.key == b.key


# -- overrides --------------------------------------------------------------------------------


def test_a_keyword_overrides_a_preset_and_the_override_is_recorded_and_shown() -> None:
    opts = OptionSet.build(Hardened, ProtectHome="read-only")
    assert opts.get("ProtectHome") == Directive.of("ProtectHome", "read-only")
    assert opts.overrides == (("ProtectHome", "tmpfs", "read-only"),)
    assert "overrides=[ProtectHome: 'tmpfs' -> 'read-only']" in repr(opts)
    assert "override: ProtectHome: 'tmpfs' -> 'read-only'" in opts.describe()


def test_a_keyword_equal_to_the_preset_value_is_not_an_override() -> None:
    assert OptionSet.build(NoNetwork, PrivateNetwork="yes").overrides == ()


def test_a_keyword_replaces_a_list_valued_preset_directive_instead_of_merging() -> None:
    opts = OptionSet.build(NoNetwork, RestrictAddressFamilies="AF_UNIX AF_INET")
    assert str(opts.get("RestrictAddressFamilies")) == "RestrictAddressFamilies=AF_INET AF_UNIX"
    assert opts.overrides[0][0] == "RestrictAddressFamilies"


@given(st.sampled_from([1.0, 2.5, 30]), st.sampled_from([None, 4.0, 60]))
def test_keyword_options_override_preset_options_visibly(
    preset_t: float, kw_t: float | None
) -> None:
    opts = OptionSet.build(Timeout(preset_t), timeout=kw_t)
    assert opts.timeout == kw_t
    assert (("timeout", float(preset_t), kw_t) in opts.overrides) == (kw_t != preset_t)


def test_trusted_true_overrides_hardened_safe_results_visibly() -> None:
    opts = OptionSet.build(Hardened, trusted=True)
    assert opts.safe_results is False
    assert ("safe_results", True, False) in opts.overrides
    assert OptionSet.build(Hardened).safe_results is True


def test_trusted_and_safe_results_that_contradict_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        OptionSet.build(trusted=True, safe_results=True)


def test_a_keyword_and_ns_options_disagreeing_is_a_conflict() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(ns_options={"CPUQuota": 0.2}, CPUQuota=0.5)
    assert info.value.directive == "CPUQuota"
    assert set(info.value.sources) == {"ns_options", "keyword"}


def test_conflicting_presets_are_refused_when_the_option_set_is_built() -> None:
    with pytest.raises(ConflictingDirectivesError) as info:
        OptionSet.build(Hardened, ReadOnly)
    assert info.value.directive == "ProtectHome"


def test_a_keyword_settles_a_conflict_between_presets_and_shows_both_preset_values() -> None:
    opts = OptionSet.build(Hardened, ReadOnly, ProtectHome="read-only")
    assert opts.get("ProtectHome") == Directive.of("ProtectHome", "read-only")
    assert opts.overrides == (("ProtectHome", "tmpfs / read-only", "read-only"),)
    assert opts.presets == "Hardened | ReadOnly"
    assert dict(opts.origins)["ProtectHome"] == "keyword"
    assert dict(opts.origins)["ProtectSystem"] == "Hardened | ReadOnly"


def test_a_keyword_option_settles_conflicting_preset_timeouts() -> None:
    opts = OptionSet.build(Timeout(5), Timeout(10), timeout=7)
    assert opts.timeout == 7.0
    assert opts.overrides == (("timeout", "5.0 / 10.0", 7.0),)


def test_presets_given_positionally_compose_as_with_the_pipe() -> None:
    assert OptionSet.build(NoNetwork, ReadOnly) == OptionSet.build(NoNetwork | ReadOnly)
    assert OptionSet.build(NoNetwork, ReadOnly).presets == "NoNetwork | ReadOnly"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "suggestion"),
    [
        pytest.param({"timout": 5}, "timeout", id="option-typo"),
        pytest.param({"worker": 2}, "workers", id="option-typo-2"),
        pytest.param({"cpuquota": 0.2}, "CPUQuota", id="directive-case"),
        pytest.param({"MemoryMaxx": "1G"}, "MemoryMax", id="directive-typo"),
    ],
)
def test_an_unknown_keyword_suggests_close_names_including_sandboxed_options(
    kwargs: dict[str, object], suggestion: str
) -> None:
    with pytest.raises(UnknownDirectiveError) as info:
        OptionSet.build(**kwargs)  # type: ignore[arg-type]
    assert suggestion in info.value.suggestions
    assert suggestion in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"CPUQuota": "lots"}, InvalidDirectiveValueError, id="directive-value"),
        pytest.param({"timeout": -1}, ConfigurationError, id="timeout"),
        pytest.param({"workers": 0}, ConfigurationError, id="workers"),
        pytest.param({"trusted": "yes"}, ConfigurationError, id="trusted"),
        pytest.param({"max_payload": "huge"}, ConfigurationError, id="max-payload"),
        pytest.param({"env": {"1BAD": "x"}}, ConfigurationError, id="env-name"),
        pytest.param({"env": 5}, ConfigurationError, id="env-type"),
        pytest.param({"raw": ["CPUWeight=5"]}, ConfigurationError, id="raw-type"),
    ],
)
def test_bad_values_are_refused_when_the_option_set_is_built(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        OptionSet.build(**kwargs)  # type: ignore[arg-type]


def test_a_positional_that_is_not_a_preset_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        OptionSet.build(42)  # type: ignore[arg-type]


def test_a_raw_property_that_shadows_a_directive_is_a_conflict() -> None:
    with pytest.raises(ConflictingDirectivesError):
        OptionSet.build(CPUQuota=0.2, raw=[RawProperty("CPUQuotaPerSecUSec", "t", 1)])


# -- reading ----------------------------------------------------------------------------------


def test_properties_are_the_merged_bus_properties_of_every_directive_and_raw_property() -> None:
    opts = OptionSet.build(ns_options=SEED, raw=[RawProperty("CPUWeight", "t", 50)])
    assert opts.properties() == [
        ("CPUQuotaPerSecUSec", "t", 200000),
        ("PrivateNetwork", "b", True),
        ("PrivateTmp", "b", True),
        ("ProtectSystem", "s", "strict"),
        ("User", "s", "nobody"),
        ("CPUWeight", "t", 50),
    ]


def test_directives_are_sorted_directive_values() -> None:
    opts = OptionSet.build(NoNetwork, ReadOnly, CPUQuota=0.2)
    names = [d.name for d in opts.directives]
    assert names == sorted(names)
    assert all(isinstance(d, Directive) for d in opts.directives)


def test_user_and_dynamic_user() -> None:
    assert OptionSet.build(ns_options=SEED).user == "nobody"
    assert OptionSet.build(NoNetwork).user is None
    assert OptionSet.build(Hardened).dynamic_user is True
    assert OptionSet.build(Hardened).user is None
    assert OptionSet.build(User=65534).user == "65534"


def test_get_takes_the_unit_file_name_and_refuses_unknown_names() -> None:
    opts = OptionSet.build(CPUQuota=0.2)
    assert opts.get("CPUQuota") == Directive.of("CPUQuota", "20%")
    assert opts.get("MemoryMax") is None
    with pytest.raises(UnknownDirectiveError):
        opts.get("CPUQuotaa")


def test_env_copies_named_variables_from_the_caller_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOXED_TEST_VAR", "value")
    assert OptionSet.build(env=["SANDBOXED_TEST_VAR"]).env == (("SANDBOXED_TEST_VAR", "value"),)
    monkeypatch.delenv("SANDBOXED_TEST_VAR")
    with pytest.raises(ConfigurationError, match="SANDBOXED_TEST_VAR"):
        OptionSet.build(env=["SANDBOXED_TEST_VAR"])


def test_repr_shows_presets_explicit_directives_and_options() -> None:
    opts = OptionSet.build(NoNetwork, ReadOnly, CPUQuota=0.2, timeout=5, workers=2)
    assert repr(opts) == "OptionSet(NoNetwork | ReadOnly, CPUQuota='20%', timeout=5.0, workers=2)"


def test_describe_names_where_each_directive_came_from() -> None:
    text = OptionSet.build(NoNetwork, ReadOnly, CPUQuota=0.2).describe()
    assert "PrivateNetwork=yes  [NoNetwork]" in text
    assert "CPUQuota=20%  [keyword]" in text
    assert "ProtectSystem=strict  [ReadOnly]" in text
