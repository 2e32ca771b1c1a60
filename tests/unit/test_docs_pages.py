"""The pages of the README, the changelog and docs/: links lead somewhere, code fits the page.

A link to a file checks that the file exists (relative to the linking
document, as GitHub and mkdocs resolve it); a link with ``#anchor`` checks
that the target has a heading with that anchor (Python-Markdown's slugs, or an
explicit ``{#id}``). Links inside code are not links.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("**/*.md")],
)
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?")


def unfenced(text: str) -> str:
    """The text without fenced code blocks."""
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", unfenced(text))


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading."""
    heading = re.sub(r"\s*\{[^}]*\}\s*$", "", heading)  # attr_list
    heading = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    value = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in unfenced(path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        explicit = re.search(r"\{[^}]*#([\w-]+)[^}]*\}\s*$", m.group(1))
        if explicit:
            found.add(explicit.group(1))
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        found.add(s if n == 0 else f"{s}_{n}")
    found.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', path.read_text()))
    return found


def links(path: Path) -> list[str]:
    text = prose(path.read_text())
    return [*LINK.findall(text), *IMAGE.findall(text)]


def internal(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)


CASES = [
    pytest.param(doc, target, id=f"{doc.relative_to(ROOT)}->{target}")
    for doc in DOCUMENTS
    for target in links(doc)
    if internal(target)
]


def test_there_are_internal_links_to_check() -> None:
    assert len(CASES) > 20


@pytest.mark.parametrize(("doc", "target"), CASES)
def test_internal_link_resolves(doc: Path, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    dest = (doc.parent / file_part).resolve() if file_part else doc
    assert dest.exists(), f"{doc.relative_to(ROOT)} links to {target!r}: no such file"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), (
            f"{doc.relative_to(ROOT)} links to {target!r}: {dest.name} has no heading "
            f"with that anchor (it has: {', '.join(sorted(anchors(dest)))})"
        )


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\nSee [b](b.md#there) and [c](c.md).\n")
    (tmp_path / "b.md").write_text("# Here\n")
    doc = tmp_path / "a.md"
    assert links(doc) == ["b.md#there", "c.md"]
    assert "there" not in anchors(tmp_path / "b.md")
    assert not (tmp_path / "c.md").exists()


def test_slugs_match_python_markdown() -> None:
    assert slug("Hosts whose PID 1 is not systemd (containers, CI)") == (
        "hosts-whose-pid-1-is-not-systemd-containers-ci"
    )
    assert slug("`ReadOnly` and `/tmp`") == "readonly-and-tmp"


# Code the reader types or copies fits the page's content column (about 82
# characters of code at 1280 pixels, with both sidebars): it never scrolls
# sideways. Program output (``text`` blocks) may be wider, as on a terminal.
CODE_WIDTH = 79
TYPED = {"python", "py", "pycon", "console", "sh", "bash", "shell", "toml", "yaml", "ini"}


def wide_code_lines(path: Path) -> list[str]:
    out = []
    text = path.read_text()
    for m in re.finditer(r"^(```|~~~)(\w*)[^\n]*\n(.*?)^\1", text, re.M | re.S):
        if m.group(2) not in TYPED:
            continue
        first = text[: m.start()].count("\n") + 2
        for i, line in enumerate(m.group(3).splitlines()):
            if len(line) > CODE_WIDTH:
                out.append(f"{path.relative_to(ROOT)}:{first + i}: {len(line)} characters")
    return out


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_do_not_scroll_sideways(doc: Path) -> None:
    assert not wide_code_lines(doc)


def test_a_wide_code_line_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    doc = tmp_path / "a.md"
    doc.write_text("```python\n" + "x" * 80 + "\n```\n\n```text\n" + "y" * 200 + "\n```\n")
    assert wide_code_lines(doc) == ["a.md:2: 80 characters"]
