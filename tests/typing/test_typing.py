"""A decorated function keeps its signature for type checkers (ParamSpec), checked by mypy --strict.

``decorated_signatures.py`` uses ``assert_type`` on the results of decorated
functions, methods and coroutines, ``reveal_type`` on a few of them, and makes
wrong calls marked ``# E: <code>``: mypy must report exactly those errors and
reveal exactly those signatures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

HERE = Path(__file__).resolve().parent
CHECKED = HERE / "decorated_signatures.py"
CHECKOUT = HERE.parents[1]

EXPECTED_REVEALS = {
    "bare": "def (x: int, y: str =) -> list[str]",
    "with_options": "def (blob: bytes, *, strict: bool =) -> dict[str, int]",
    "fetch": "def (n: int) -> typing.Coroutine[Any, Any, str]",
}


@pytest.fixture(scope="module")
def mypy_output() -> list[str]:
    # Errors in the package itself are mypy's CI job; here only this file counts.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--show-error-codes",
            str(CHECKED.relative_to(CHECKOUT)),
        ],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.stderr.strip() == "", out.stderr
    return out.stdout.splitlines()


def _marked_errors() -> dict[int, str]:
    marks = {}
    for n, line in enumerate(CHECKED.read_text().splitlines(), 1):
        m = re.search(r"# E: ([a-z-]+)$", line)
        if m:
            marks[n] = m.group(1)
    return marks


def _messages(lines: list[str], kind: str) -> dict[int, str]:
    found = {}
    pattern = re.compile(rf"^{re.escape(CHECKED.name)}:(\d+): {kind}: (.*)$")
    for line in lines:
        m = pattern.match(Path(line).name if line.startswith("/") else line.split("/")[-1])
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def test_decorated_functions_methods_and_coroutines_keep_their_types(
    mypy_output: list[str],
) -> None:
    errors = _messages(mypy_output, "error")
    marked = _marked_errors()
    unexpected = {n: e for n, e in errors.items() if n not in marked}
    assert unexpected == {}, "\n".join(mypy_output)


def test_wrong_calls_to_decorated_functions_are_type_errors(mypy_output: list[str]) -> None:
    errors = _messages(mypy_output, "error")
    for line, code in _marked_errors().items():
        assert line in errors, f"line {line}: mypy accepted a wrong call\n" + "\n".join(mypy_output)
        assert errors[line].endswith(f"[{code}]"), errors[line]


def test_reveal_type_shows_the_original_signatures(mypy_output: list[str]) -> None:
    notes = _messages(mypy_output, "note")
    revealed = [v.removeprefix("Revealed type is ").strip('"') for v in notes.values()]
    assert revealed == list(EXPECTED_REVEALS.values())
