"""The API reference (docs/api.md, rendered by mkdocstrings) documents every public name."""

from __future__ import annotations

import re
from pathlib import Path

import sandboxed

API = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented() -> list[str]:
    return re.findall(r"^::: sandboxed\.(\w+)\s*$", API.read_text(), re.M)


def test_every_public_name_has_an_entry() -> None:
    missing = sorted(set(sandboxed.__all__) - set(documented()))
    assert not missing, f"docs/api.md lacks: {', '.join(missing)}"


def test_every_entry_is_a_public_name() -> None:
    extra = sorted(set(documented()) - set(sandboxed.__all__))
    assert not extra, f"docs/api.md documents names outside sandboxed.__all__: {extra}"


def test_no_name_is_documented_twice() -> None:
    names = documented()
    assert len(names) == len(set(names))
