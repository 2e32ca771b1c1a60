"""pytest plugin: ``@pytest.mark.sandboxed(NoNetwork, ...)`` runs a test's body in a sandbox."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        "sandboxed(*presets, **directives): run this test's body inside a sandbox with these options",
    )
