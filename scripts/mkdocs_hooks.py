"""mkdocs hooks: wide pages hide the table of contents; Sphinx roles in docstrings read as code."""

from __future__ import annotations

import re
from typing import Any

# The docstrings use Sphinx roles (:class:`~sandboxed.x.Name`); mkdocstrings shows
# them as written. On the API page they become plain code, as a reader expects.
ROLE = re.compile(r":(?:class|func|meth|attr|mod|exc|data|obj):<code>(~?)([^<]*)</code>")

# directives.md hides its own (docgen); architecture.md has a wide map of the package.
WIDE = {"benchmarks.md", "architecture.md"}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri in WIDE:
        hide = set(page.meta.get("hide", []))
        page.meta["hide"] = sorted(hide | {"toc"})
    return markdown


def on_page_content(html: str, page: Any, **_: Any) -> str:
    def code(m: re.Match[str]) -> str:
        name = m.group(2).rpartition(".")[2] if m.group(1) else m.group(2)
        return f"<code>{name}</code>"

    return ROLE.sub(code, html)
