"""Which failed starts are tried again, under a new name, and which are reported at once.

The real thing (starts beside a reload/re-exec loop) is tests/systemd/test_reload.py;
here the decision itself, with the unit's start replaced by a scripted outcome.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandboxed import UnitFailedError
from sandboxed import sandboxed as sandbox
from sandboxed.runtime import pool
from sandboxed.wire import frames


class _Script:
    """What each successive start does: an exception to raise, or None to succeed."""

    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = outcomes
        self.names: list[str] = []
        self.stopped: list[str] = []
        self.reloaded = False  # what the manager says: a reload since the start began

    def channel(self, name: str, *_args: object, **_kwargs: object) -> object:
        script = self

        class _Channel:
            def __init__(self) -> None:
                self.name = name

            def start(self) -> None:
                script.names.append(name)
                outcome = script.outcomes.pop(0)
                if outcome is not None:
                    raise outcome

        return _Channel()

    def stop_unit(self, name: str, wait: bool = True) -> None:
        self.stopped.append(name)


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Script]:
    s = _Script([])
    monkeypatch.setattr(pool, "UnitChannel", s.channel)
    monkeypatch.setattr(pool, "manager_client", lambda: s)
    monkeypatch.setattr(pool.time, "sleep", lambda _s: None)
    monkeypatch.setattr(pool._client, "reloaded_since", lambda _t: s.reloaded)
    yield s


def _vanished(name: str = "u") -> UnitFailedError:
    return UnitFailedError(name, "the worker did not start; already collected", vanished=True)


def _sandbox() -> pool.Sandbox:
    def ident(x: int) -> int:
        return x

    return sandbox(User="nobody")(ident).sandbox  # type: ignore[no-any-return, attr-defined]


def test_a_unit_that_vanished_before_ready_is_started_again_under_a_new_name(
    script: _Script,
) -> None:
    script.outcomes = [_vanished(), None]
    unit = _sandbox()._start_unit()
    assert len(script.names) == 2 and len(set(script.names)) == 2
    assert unit.name == script.names[1]  # type: ignore[attr-defined]
    assert script.stopped == [script.names[0]]  # the lost attempt does not linger


def test_a_unit_that_keeps_vanishing_is_reported_after_two_more_tries(script: _Script) -> None:
    script.outcomes = [_vanished("a"), _vanished("b"), _vanished("c"), None]
    with pytest.raises(UnitFailedError) as info:
        _sandbox()._start_unit()
    assert info.value.unit == "c"
    assert len(script.names) == 3


def test_vanishing_and_guard_refusals_share_one_small_allowance(script: _Script) -> None:
    refused = UnitFailedError("r", "the guard refused", exit_status=frames.GUARD_REFUSED_EXIT)
    script.outcomes = [refused, _vanished(), _vanished("last"), None]
    with pytest.raises(UnitFailedError) as info:
        _sandbox()._start_unit()
    assert info.value.unit == "last"


@pytest.mark.parametrize(
    "failure",
    [
        # systemd said why: a cause, not a race.
        UnitFailedError("u", "exit status 217/USER", exit_status=217),
        # The worker said why on its stderr.
        UnitFailedError("u", "the worker did not start", stderr="Traceback ...", vanished=False),
    ],
    ids=["systemd-said-why", "worker-said-why"],
)
def test_a_start_that_failed_for_a_known_reason_is_reported_at_once(
    script: _Script, failure: UnitFailedError
) -> None:
    script.outcomes = [failure, None]
    with pytest.raises(UnitFailedError) as info:
        _sandbox()._start_unit()
    assert info.value is failure
    assert len(script.names) == 1


def test_a_start_that_met_a_reload_is_tried_again_without_using_the_allowance(
    script: _Script,
) -> None:
    # systemd said why (the worker's exit status), but the manager reloaded meanwhile.
    script.reloaded = True
    failures: list[BaseException | None] = [
        UnitFailedError(f"u{i}", "exit status 1", exit_status=1) for i in range(4)
    ]
    script.outcomes = [*failures, None]
    unit = _sandbox()._start_unit()
    assert unit.name == script.names[-1] and len(script.names) == 5  # type: ignore[attr-defined]
