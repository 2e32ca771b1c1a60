"""The process's one connection to the service manager, shared by every sandbox."""

from __future__ import annotations

import threading
from typing import Any

from sandboxed._errors import ManagerError

_client_lock = threading.Lock()
_client: Any = None


def manager_client() -> Any:
    """The process's shared manager connection, reconnected when it dropped."""
    global _client
    from sandboxed.systemd import locate
    from sandboxed.systemd.bus import ManagerClient

    with _client_lock:
        if _client is None or _client.closed:
            loc = locate.current()
            try:
                _client = ManagerClient(loc.address)
            except ManagerError:
                # The manager may have been restarted (embedded) or moved: look again.
                locate.forget()
                _client = ManagerClient(locate.current().address)
        return _client


def reset_after_fork() -> None:
    global _client
    _client = None
