"""mkdocs hooks: pages whose tables need the whole width hide the table of contents."""

from __future__ import annotations

from typing import Any

# directives.md hides its own (docgen); architecture.md has a wide map of the package.
WIDE = {"benchmarks.md", "architecture.md"}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri in WIDE:
        hide = set(page.meta.get("hide", []))
        page.meta["hide"] = sorted(hide | {"toc"})
    return markdown
