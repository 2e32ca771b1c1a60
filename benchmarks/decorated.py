"""Decorated functions as users write them: at module level, so that they pickle by
reference (a worker that runs one imports this module, and with it sandboxed's API)."""

from __future__ import annotations

from sandboxed import NoNetwork, sandboxed


@sandboxed(NoNetwork)
def noop() -> None:
    """The warm-call benchmark's decorated no-op."""
    return None


@sandboxed(NoNetwork)
def echo(value: object) -> object:
    """The large-payload benchmark's decorated echo."""
    return value


@sandboxed(NoNetwork, containment=False)
def noop_uncontained() -> None:
    """The containment-cost benchmark's no-op without the baseline (its control)."""
    return None
