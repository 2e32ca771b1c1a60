"""A user's exception comes back without sandboxed's own frames in its traceback.

As with ``concurrent.futures``, the sandbox-side traceback is kept as the
exception's ``__cause__``; the caller-side traceback shows the caller's code
and at most one frame of sandboxed (the line that re-raises), which carries
``__tracebackhide__`` so that pytest and IPython hide it too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from types import TracebackType

import pytest

import sandboxed
from sandboxed import NoNetwork, RemoteError, SafeResults
from sandboxed import sandboxed as sandboxed_
from sandboxed._errors import RemoteTraceback

pytestmark = pytest.mark.systemd

PACKAGE = os.path.dirname(os.path.realpath(sandboxed.__file__))


@sandboxed_(NoNetwork)
def boom(x: int) -> int:
    raise ValueError(f"bad value {x}")


@sandboxed_(NoNetwork)
async def aboom(x: int) -> int:
    raise ValueError(f"bad value {x}")


@sandboxed_(NoNetwork, SafeResults)
def safe_boom() -> None:
    raise ValueError("untrusted")


def library_frames(tb: TracebackType | None) -> list[tuple[str, bool]]:
    """(file, hidden) of each frame of sandboxed's package in a traceback."""
    out = []
    while tb is not None:
        path = os.path.realpath(tb.tb_frame.f_code.co_filename)
        if path.startswith(PACKAGE + os.sep):
            out.append((path, bool(tb.tb_frame.f_locals.get("__tracebackhide__"))))
        tb = tb.tb_next
    return out


def caught(fn, *args):  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except Exception as e:
        return e
    raise AssertionError("no exception")


def test_user_exception_carries_at_most_one_hidden_library_frame(systemd: object) -> None:
    e = caught(boom, 3)
    assert isinstance(e, ValueError) and str(e) == "bad value 3"
    frames = library_frames(e.__traceback__)
    assert len(frames) <= 1, frames
    assert all(hidden for _, hidden in frames), frames


def test_remote_traceback_is_kept_as_the_cause(systemd: object) -> None:
    e = caught(boom, 4)
    assert isinstance(e.__cause__, RemoteTraceback)
    assert 'in boom\n    raise ValueError(f"bad value {x}")' in e.__cause__.tb
    text = "".join(traceback.format_exception(e))
    assert "The above exception was the direct cause" in text
    assert text.count("ValueError: bad value 4") == 2  # remote, then here


def test_async_user_exception_is_trimmed_too(systemd: object) -> None:
    e = caught(asyncio.run, aboom(5))
    assert isinstance(e, ValueError)
    frames = library_frames(e.__traceback__)
    assert len(frames) <= 1 and all(hidden for _, hidden in frames), frames
    assert isinstance(e.__cause__, RemoteTraceback)


def test_remote_error_in_safe_mode_is_trimmed_too(systemd: object) -> None:
    e = caught(safe_boom)
    assert isinstance(e, RemoteError) and e.type_name.endswith("ValueError")
    frames = library_frames(e.__traceback__)
    assert len(frames) <= 1 and all(hidden for _, hidden in frames), frames


def test_pytest_report_of_a_failing_call_shows_no_library_frames(
    systemd: object, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "test_calls.py").write_text(
        textwrap.dedent(
            """
            from sandboxed import NoNetwork, sandboxed

            @sandboxed(NoNetwork)
            def parse(blob):
                raise ValueError("cannot parse " + blob)

            def test_calls_a_sandboxed_function():
                parse("x")
            """
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_calls.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "ValueError: cannot parse x" in r.stdout, r.stdout + r.stderr
    local = r.stdout.split("The above exception was the direct cause")[-1]
    assert PACKAGE not in local and "sandboxed/" not in local, r.stdout
    assert 'raise ValueError("cannot parse " + blob)' in r.stdout  # the remote frame


def test_executor_future_exception_carries_no_library_frames(systemd: object) -> None:
    import tasks

    from sandboxed import TransientUnitPoolExecutor

    with TransientUnitPoolExecutor(1, NoNetwork) as pool:
        e = caught(pool.submit(tasks.fail, "gone").result)
    assert isinstance(e, KeyError) and isinstance(e.__cause__, RemoteTraceback)
    assert library_frames(e.__traceback__) == []
