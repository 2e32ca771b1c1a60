"""What each frame carries: the one definition both ends use.

A frame is a :class:`~sandboxed.wire.framing.FrameType` and parts (see
:mod:`sandboxed.wire.framing`). Control frames carry one part, a codec-encoded
tuple whose shape is given here; :func:`unpack` checks it, because the caller
reads what a worker sends as untrusted input. A new frame type is a new
``FrameType`` in framing, its shape here, and its handling at both ends.
"""

from __future__ import annotations

from sandboxed._errors import ProtocolError
from sandboxed.wire import codec
from sandboxed.wire.framing import FrameType

TYPE_CHECKING = False  # typing stays out of the sandbox's start-up
if TYPE_CHECKING:
    from typing import Any

#: The shape of each control frame's payload (exact types: a bool is not an int here).
SHAPES: dict[FrameType, tuple[type, ...]] = {
    FrameType.SPAWNED: (int, int),  # worker id, pid
    FrameType.EXITED: (int, int, int),  # worker id, pid, wait status
    FrameType.KILL: (int, int),  # worker id, signal
    FrameType.PARTIAL: (int, bool),  # task index, succeeded (the outcome's parts follow)
}

#: The fields of a LOG frame's record (a codec-encoded dict), as ``logging.LogRecord`` names them.
LOG_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "msg",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "process",
    "threadName",
    "exc_text",
)

#: The exit status of a supervisor that refused to serve because its unit is not what
#: was promised (a namespace it does not have: :mod:`sandboxed.worker.guard`).
GUARD_REFUSED_EXIT = 3

#: The keys of a CALL frame's header part (a codec-encoded dict).
CALL_HEADER = ("safe", "log_level", "ack")

#: CALL flag: the frame is ``[header, digest, function stream or b"", call stream,
#: *buffers]``; the call stream holds None for the function, which is the one of that
#: digest (the SHA-256 of its stream): shipped in this frame, or in an earlier one to
#: the same worker when the stream part is empty. A worker that does not have it
#: answers UNKNOWN_FUNCTION ``[digest]`` and the caller sends it once more, in full.
FUNCTION_APART = 1

#: By-value functions a worker keeps (the least recently used goes first); the caller
#: keeps the same account of each worker, so it knows what to ship again.
FUNCTION_CACHE_SIZE = 64


def pack(kind: FrameType, *values: Any) -> bytes:
    """The payload of control frame ``kind``."""
    return codec.encode(values)


def unpack(kind: FrameType, data: bytes | bytearray | memoryview) -> tuple[Any, ...]:
    """The fields of control frame ``kind``; :class:`ProtocolError` if it is not of its shape."""
    shape = SHAPES[kind]
    try:
        value = codec.decode(data)
    except Exception as e:  # noqa: BLE001 - whatever the bytes were, it is not our frame
        raise ProtocolError(f"malformed {kind.name} frame: {e}") from None
    if (
        type(value) is not tuple
        or len(value) != len(shape)
        or any(type(v) is not t for v, t in zip(value, shape, strict=True))
    ):
        names = ", ".join(t.__name__ for t in shape)
        raise ProtocolError(f"malformed {kind.name} frame: expected ({names})")
    return value
