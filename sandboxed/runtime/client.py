"""The process's one connection to the service manager, shared by every sandbox.

It also keeps the manager's *generation*: a number bumped whenever the manager
may have re-read its units (it announced a reload or re-exec, or the connection
was lost or made anew). A unit started in an older generation is checked before
its next call (:meth:`UnitChannel.still_as_started`); on the warm path that costs
one comparison of two ints. The manager announces reloads to every peer-to-peer
connection, but on a message bus only while some client is subscribed (we are
not: a subscriber makes it broadcast every unit's changes); there the generation
is also bumped every ``RECHECK_SECONDS``, so each unit is checked again at its
first call after that, cheaply (is it still loaded?); ``announced`` counts only
the real announcements, after which the check also compares its properties.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sandboxed._errors import DBusError, ManagerError

_client_lock = threading.Lock()
_client: Any = None
generation = 0
announced = 0
RECHECK_SECONDS = 2.0


def _manager_changed(_active: bool = False) -> None:
    global generation, announced
    announced += 1
    generation += 1


def _recheck_due() -> None:
    global generation
    generation += 1


def manager_client() -> Any:
    """The process's shared manager connection, reconnected when it dropped."""
    global _client
    from sandboxed.systemd import locate
    from sandboxed.systemd.bus import ManagerClient

    with _client_lock:
        if _client is None or _client.closed:
            loc = locate.current()
            try:
                client = ManagerClient(loc.address)
            except ManagerError:
                # The manager may have been restarted (embedded) or moved: look again.
                locate.forget()
                client = ManagerClient(locate.current().address)
            client.on_reload(_manager_changed)
            _client = client
            _manager_changed()
            if not client.peer_to_peer:
                threading.Thread(
                    target=_recheck_while_open,
                    args=(client,),
                    name="sandboxed-recheck",
                    daemon=True,
                ).start()
        return _client


def _recheck_while_open(client: Any) -> None:
    # While the connection is open, whether or not it is still the shared one (a
    # client put aside and brought back must not come back without its recheck).
    seen = _loaded_at_or_none(client)
    while not client.closed:
        time.sleep(RECHECK_SECONDS)
        now = _loaded_at_or_none(client)
        if now is not None and seen is not None and now != seen:
            _manager_changed()  # a reload or re-exec the manager did not announce to us
        else:
            _recheck_due()
        if now is not None:
            seen = now


def _loaded_at_or_none(client: Any) -> int | None:
    try:
        return units_loaded_at(client)
    except Exception:  # noqa: BLE001 - no answer now: the blind recheck covers it
        return None


def units_loaded_at(client: Any = None) -> int | None:
    """When the manager last loaded its units (at boot, a reload or a re-exec), in
    microseconds of ``CLOCK_MONOTONIC`` (the clock of :func:`time.monotonic`); None
    when it does not say. :class:`ManagerError` when it does not answer.

    systemd's ``UnitsLoadTimestampMonotonic`` is 0 until the first reload, then the
    time of the last one: what tells a bus client (sent no ``Reloading`` signal
    unless someone subscribed) that a reload happened.
    """
    try:
        return int((client or manager_client()).manager_property("UnitsLoadTimestampMonotonic"))
    except DBusError as e:
        if e.name.endswith(("UnknownProperty", "InvalidArgs")):
            return None
        raise


def reloaded_since(t0: float) -> bool:
    """Did the manager reload or re-execute after ``t0`` (a :func:`time.monotonic`)?
    Waits (bounded) for a manager that is re-executing; False when it cannot tell."""
    try:
        at = while_unavailable(units_loaded_at)
    except Exception:  # noqa: BLE001 - cannot tell
        return False
    return at is not None and at >= int(t0 * 1_000_000)


def while_unavailable(fn: Callable[[], Any]) -> Any:
    """``fn()``, called again while the manager does not answer (reloading,
    re-executing, coming back), for at most ``MANAGER_RETRY_SECONDS``."""
    from sandboxed.systemd import bus

    deadline = time.monotonic() + bus.MANAGER_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            return fn()
        except ManagerError as e:
            left = deadline - time.monotonic()
            if not bus.manager_unavailable(e) or left <= 0:
                raise
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)


def reset_after_fork() -> None:
    global _client
    _client = None
