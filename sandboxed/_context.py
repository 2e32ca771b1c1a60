"""Process-wide facts that must be cheap to check: are we a sandbox worker?"""

from __future__ import annotations

IN_WORKER = False
"""True inside a sandbox worker: decorated functions called there run directly."""
