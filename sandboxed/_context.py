"""Process-wide facts that must be cheap to check: are we a sandbox worker?"""

from __future__ import annotations

IN_WORKER = False
"""True inside a sandbox worker: decorated functions called there run directly."""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

send_partial: Callable[[int, bool, Sequence[bytes]], None] | None = None
"""Inside a worker: send one task's outcome of a batch to the caller right away."""
