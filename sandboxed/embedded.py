"""The embedded systemd, for hosts whose PID 1 is not systemd (containers, CI).

The public face of :mod:`sandboxed.systemd.embedded`: start, inspect and stop
the manager sandboxed boots in namespaces of its own (``python -m sandboxed
embedded start|status|stop`` does the same from a shell).
"""

from sandboxed.systemd.embedded import (
    DEFAULT_DIR,
    EmbeddedManager,
    start,
    state_dir,
    status,
    stop,
)

__all__ = ["DEFAULT_DIR", "EmbeddedManager", "start", "state_dir", "status", "stop"]
