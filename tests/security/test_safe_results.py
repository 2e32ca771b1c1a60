"""Safe results: what a sandbox in safe mode returns runs no code in the caller.

The sandboxed code is hostile. It returns (1) an object whose ``__reduce__``
would create a marker file when unpickled, (2) the bytes of such a pickle,
(3) the same through a worker it has subverted: it replaces the worker's own
result and exception packaging so that a trusted-mode pickle stream goes
back whatever the caller asked for. In safe mode (``Hardened``,
``trusted=False``, ``SafeResults``) the marker never appears. In trusted mode
(the default) it does: that mode is for code you trust.
"""

from __future__ import annotations

import contextlib
import pickle
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escape_kit import in_sandbox

from sandboxed import Hardened, SafeResults, SandboxError, UnsafeResultError

pytestmark = pytest.mark.systemd


def _code(marker: str) -> str:
    """Python that creates ``marker`` and evaluates to an innocent ValueError."""
    return f"__import__('builtins').open({marker!r}, 'w').close() or ValueError('innocent')"


class Payload:
    """Unpickling it runs ``eval`` of code that creates ``marker``, in whichever process
    unpickles it; nothing of this class is needed there (``eval`` is a builtin)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (eval, (_code(self.marker),))


class PayloadError(Exception):
    """The same as an exception. Unpickled it *is* an exception, a ValueError; named so,
    it passes the worker's check that an exception survives a pickle round trip."""

    __qualname__ = "ValueError"

    def __init__(self, marker: str) -> None:
        super().__init__(marker)
        self.marker = marker

    def __reduce__(self) -> Any:
        return (eval, (_code(self.marker),))


def return_object(marker: str) -> Any:
    return Payload(marker)


def return_pickle_bytes(marker: str) -> bytes:
    return pickle.dumps(Payload(marker))


def raise_object(marker: str) -> None:
    raise PayloadError(marker)


def subvert_worker_then_return(marker: str) -> str:
    """Make the worker send a trusted-mode pickle of the payload, whatever ``safe`` says."""
    from sandboxed.wire import serial

    real_result, real_exception = serial.dumps_result, serial.dumps_exception
    serial.dumps_result = lambda value, safe=False: real_result(Payload(marker), safe=False)
    serial.dumps_exception = lambda exc, safe=False: real_exception(PayloadError(marker))
    return "harmless-looking"


def subvert_worker_then_raise(marker: str) -> None:
    subvert_worker_then_return(marker)
    raise ValueError("harmless-looking")


ATTACKS = pytest.mark.parametrize(
    "attack",
    [
        return_object,
        return_pickle_bytes,
        raise_object,
        subvert_worker_then_return,
        subvert_worker_then_raise,
    ],
    ids=lambda f: f.__name__,
)
SAFE_MODES = pytest.mark.parametrize(
    "mode",
    [{"preset": Hardened}, {"trusted": False}, {"preset": SafeResults}],
    ids=["Hardened", "trusted=False", "SafeResults"],
)


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path in the caller's /tmp. Every sandbox here has PrivateTmp=, so that only the
    caller, never the sandbox itself, could create it."""
    path = Path(f"/tmp/sandboxed-pwned-{secrets.token_hex(6)}")
    yield path
    path.unlink(missing_ok=True)


def _box(mode: dict[str, Any], tag: str) -> Any:
    opts = dict(mode)
    tag = f"{tag}-{secrets.token_hex(4)}"
    preset = opts.pop("preset", None)
    # A unit per attack: a subverted worker must not serve another test.
    return in_sandbox(
        *([preset] if preset else []), PrivateTmp=True, SyslogIdentifier=f"safe-{tag}", **opts
    )


@SAFE_MODES
@ATTACKS
def test_a_hostile_result_runs_nothing_in_the_caller_in_safe_mode(
    mode: dict[str, Any], attack: Any, marker: Path
) -> None:
    box = _box(mode, attack.__name__)
    try:
        try:
            value = box(attack, str(marker))
        except (SandboxError, ValueError) as e:
            value = e
        assert not marker.exists()
        if attack is return_pickle_bytes:
            assert isinstance(value, bytes)  # plain data: it stays bytes until *you* unpickle it
        elif attack is return_object:
            assert isinstance(value, UnsafeResultError)
        elif attack is subvert_worker_then_return:
            assert not isinstance(value, Payload)
    finally:
        box.sandbox.shutdown()
    assert not marker.exists()


@pytest.mark.parametrize("attack", [return_object, raise_object], ids=lambda f: f.__name__)
def test_in_trusted_mode_a_hostile_result_runs_code_in_the_caller(
    attack: Any, marker: Path
) -> None:
    # Documented: trusted mode (the default) unpickles, which runs what the sandbox chose.
    box = in_sandbox(PrivateTmp=True)
    with contextlib.suppress(Exception):  # what comes back is beside the point
        box(attack, str(marker))
    assert marker.exists()
