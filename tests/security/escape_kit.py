"""What attacks in the escape suite share; imported inside sandboxes too (keep it light).

An attack returns ``"ok"`` when it succeeded, else a short description of
the error that stopped it (``"PermissionError EPERM"``), so that a test
asserts on a plain value and a failure message shows what happened.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Any

OK = "ok"
#: A loopback address of our own for the fake DNS server (the whole 127/8 is local).
DNS_ADDRESS = "127.53.53.53"


def attempt(action: Callable[[], Any]) -> str:
    """Run ``action``; ``"ok"`` if it returned, else the exception's type and errno name."""
    try:
        action()
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, str(e.errno))
        return f"{type(e).__name__} {code}"
    except Exception as e:  # noqa: BLE001 - any refusal counts as a refusal
        return f"{type(e).__name__} {e}"
    return OK


def dns_query(name: str) -> bytes:
    """A DNS query packet asking for the A record of ``name``."""
    header = struct.pack(">HHHHHH", 0x5EC, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack(">HH", 1, 1)


def in_sandbox(*presets: Any, **directives: Any) -> Callable[..., Any]:
    """A function that runs ``fn(*args, **kwargs)`` inside a sandbox with these options.

    Functions with equal options share one sandbox (one unit), so a test module
    that builds ``in_sandbox(NoNetwork)`` twice still starts one unit.
    """
    from sandboxed import sandboxed

    @sandboxed(*presets, **directives)
    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return run
