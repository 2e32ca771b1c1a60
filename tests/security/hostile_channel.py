"""What a hostile function does to the channel back to its caller; runs inside sandboxes.

The attacker knows the wire format (it is public: the framing and the plain-data
codec are documented in the package) and owns every byte its process writes.
Nothing here imports sandboxed: an attacker brings its own encoder, and finds
its channel the way any code can, by looking at its own descriptors.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from typing import Any

RESULT = 2
ERROR = 3
OUTPUT = 4
LOG = 5
STARTED = 12
PARTIAL = 13

_HEADER = struct.Struct("!BBHIQ")
MAGIC = b"SBC\x01"


def channel() -> socket.socket:
    """The worker's socket to its caller: the one socket among this process's descriptors."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                found.append(fd)
        except OSError:
            continue
    if len(found) != 1:
        raise RuntimeError(f"expected one socket among my descriptors, found {found}")
    return socket.socket(fileno=os.dup(found[0]))


def frame(kind: int, parts: list[bytes]) -> bytes:
    """One frame: header, table of part lengths, parts."""
    lengths = [len(p) for p in parts]
    table = b"".join(struct.pack("!Q", n) for n in lengths)
    return _HEADER.pack(kind, 0, 0, len(parts), sum(lengths)) + table + b"".join(parts)


def header(kind: int, lengths: list[int]) -> bytes:
    """Only the header and length table of a frame announcing parts of these lengths."""
    table = b"".join(struct.pack("!Q", n) for n in lengths)
    return _HEADER.pack(kind, 0, 0, len(lengths), sum(lengths)) + table


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _value(v: Any) -> bytes:
    if v is None:
        return b"N"
    if v is True:
        return b"T"
    if v is False:
        return b"F"
    if type(v) is int:
        n = (v.bit_length() + 8) // 8 if v else 0
        return b"i" + _uvarint(n) + v.to_bytes(n, "little", signed=True)
    if type(v) is float:
        return b"f" + struct.pack("<d", v)
    if type(v) is str:
        raw = v.encode()
        return b"s" + _uvarint(len(raw)) + raw
    if type(v) is bytes:
        return b"b" + _uvarint(len(v)) + v
    if type(v) is list:
        return b"l" + _uvarint(len(v)) + b"".join(map(_value, v))
    if type(v) is tuple:
        return b"t" + _uvarint(len(v)) + b"".join(map(_value, v))
    if type(v) is dict:
        body = b"".join(_value(k) + _value(x) for k, x in v.items())
        return b"d" + _uvarint(len(v)) + body
    raise TypeError(type(v))


def encode(value: Any) -> bytes:
    """The plain-data codec's stream of ``value`` (a subset of its types)."""
    return MAGIC + _value(value)


def empty_sets(n: int) -> bytes:
    """A codec stream of a list of ``n`` empty sets: 2 bytes each on the wire."""
    return MAGIC + b"l" + _uvarint(n) + b"S\x00" * n


def safe_exception(type_name: str, message: str) -> bytes:
    """A safe-mode exception envelope."""
    return encode((type_name, message, f"{type_name}: {message}\n", None))


def escapes() -> str:
    """A result that, printed raw on a terminal, would retitle it and clear the screen."""
    return "before \x1b]0;pwned\x07\x1b[2J after"
