"""What a worker sends besides its result: its output and its log records, replayed here.

Every byte of it comes from the sandbox's code: it is data, never a command.

Output (OUTPUT frames, ``[stream name, bytes]``):

- a frame is written out as it is read, in pieces of at most ``CHUNK`` bytes, so
  that however large a frame the worker announces, the caller holds one piece of it
  (a 256 MiB frame costs the caller ``CHUNK`` bytes, not GiBs); a character split
  across pieces or frames is decoded whole (one incremental UTF-8 decoder per
  stream and call); the stream must be ``stdout`` or ``stderr``;
- written to a terminal, control characters are escaped (:func:`escape_controls`)
  unless the caller asked for ``raw_output``: escape sequences are commands to a
  terminal (retitle it, clear it, move the cursor over what the caller printed,
  write the clipboard with OSC 52). To a file or a pipe the text goes as it is.

Log records (LOG frames, a codec-encoded dict of ``frames.LOG_FIELDS``):

- a record lands on a logger under a prefix the caller chose (``sandboxed.remote``
  by default): the sandbox's logger ``lib.db`` becomes ``sandboxed.remote.lib.db``,
  never a logger of the caller's own;
- the name is validated (dotted words of ``[A-Za-z0-9_-]``, other characters
  replaced, at most ``MAX_DEPTH`` words of at most ``MAX_NAME`` characters in all),
  and the loggers created for sandboxes are bounded (``MAX_LOGGERS`` registry
  entries per prefix and option set, for the life of the process): past that,
  that sandbox's records go to the prefix's own logger;
- the level is one of DEBUG, INFO, WARNING, ERROR, CRITICAL (the highest at or
  below what was sent; anything that is not an int is WARNING);
- the message and traceback text are strings of at most ``MAX_TEXT`` characters
  with control characters escaped (newlines and tabs stay);
- what the sandbox says about where the record came from (``pathname``,
  ``lineno``, ``funcName``, ``process``, ``threadName``, ``created``...) is kept as
  ``remote_*`` attributes; the record's own are the caller's (``pathname`` is
  ``<sandbox UNIT>``, ``process`` the caller's pid, ``created`` when it arrived);
- a frame larger than ``MAX_LOG_FRAME`` is discarded unread, and a malformed one
  dropped, each with a warning on the prefix's logger.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import logging
import re
import sys
import threading
from typing import Any, TextIO

from sandboxed._errors import ProtocolError
from sandboxed.directives.options import DEFAULT_LOG_PREFIX
from sandboxed.wire import codec
from sandboxed.wire.framing import recv_exact_by, recv_into_by, recv_lengths_by

# -- output ------------------------------------------------------------------------------------

CHUNK = 1 << 16
"""The most bytes of one OUTPUT frame the caller holds at once."""
_STREAMS = (b"stdout", b"stderr")
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))


@functools.cache
def _table(keep: str) -> dict[int, str]:
    codes = [*range(0x20), 0x7F, *range(0x80, 0xA0), *_BIDI]
    return {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in codes if chr(c) not in keep}


def escape_controls(text: str, keep: str = "\n\t") -> str:
    """``text`` with control characters shown as escapes (``\\x1b``, ``\\u202e``).

    C0 controls but those in ``keep``, DEL, C1 controls and the bidirectional
    overrides and isolates are replaced; everything else is left as it is.
    """
    if text.isprintable():
        return text
    return text.translate(_table(keep))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _write(target: TextIO, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        target.write(text)


class CallOutput:
    """The OUTPUT frames of one call, written to the caller's ``sys.stdout``/``sys.stderr``."""

    __slots__ = ("buf", "decoders", "raw")

    def __init__(self, raw: bool = False) -> None:
        self.raw = raw
        self.decoders: dict[bytes, codecs.IncrementalDecoder] = {}
        self.buf: bytearray | None = None

    def frame(self, sock: Any, nparts: int, total: int, deadline: float | None) -> None:
        """Read an OUTPUT frame whose header was read, writing it out as it comes."""
        if nparts != 2:
            raise ProtocolError(f"an OUTPUT frame has 2 parts (stream, bytes), not {nparts}")
        name_size, size = recv_lengths_by(sock, 2, total, deadline)
        if name_size > 8:
            raise ProtocolError(f"an OUTPUT frame names a stream of {name_size} bytes")
        name = bytes(recv_exact_by(sock, name_size, deadline))
        if name not in _STREAMS:
            raise ProtocolError(f"an OUTPUT frame for an unknown stream {name!r}")
        target = sys.stderr if name == b"stderr" else sys.stdout
        decoder = self.decoders.get(name)
        if decoder is None:
            decoder = self.decoders[name] = codecs.getincrementaldecoder("utf-8")("replace")
        escape = not self.raw and _is_terminal(target)
        if self.buf is None:
            self.buf = bytearray(CHUNK)
        view = memoryview(self.buf)
        left = size
        while left:
            n = min(left, CHUNK)
            recv_into_by(sock, view[:n], deadline)
            left -= n
            text = decoder.decode(view[:n])
            if text:
                _write(target, escape_controls(text) if escape else text)
        with contextlib.suppress(OSError, ValueError):
            target.flush()

    def close(self) -> None:
        """Write what the decoders still hold (a character cut short by the call's end)."""
        for name, decoder in self.decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                target = sys.stderr if name == b"stderr" else sys.stdout
                escape = not self.raw and _is_terminal(target)
                _write(target, escape_controls(text) if escape else text)
        self.decoders.clear()


def write_output(stream: bytes, data: bytes | bytearray, raw: bool = False) -> None:
    """Write one piece of output that arrived whole (a dead worker's last words, which
    the supervisor forwards in frames of at most 64 KiB), escaped on a terminal."""
    if stream not in _STREAMS:
        return
    target = sys.stderr if stream == b"stderr" else sys.stdout
    text = bytes(data).decode("utf-8", errors="replace")
    _write(target, text if raw or not _is_terminal(target) else escape_controls(text))
    with contextlib.suppress(OSError, ValueError):
        target.flush()


def drain(sock: Any, size: int, deadline: float | None) -> None:
    """Read and discard ``size`` bytes (a frame refused unread), ``CHUNK`` at a time."""
    buf = memoryview(bytearray(min(size, CHUNK)))
    while size:
        n = min(size, CHUNK)
        recv_into_by(sock, buf[:n], deadline)
        size -= n


# -- log records -------------------------------------------------------------------------------

DEFAULT_PREFIX = DEFAULT_LOG_PREFIX
MAX_NAME = 200
MAX_DEPTH = 6
MAX_LOGGERS = 256
MAX_TEXT = 64 * 1024
MAX_FIELD = 1024
MAX_LOG_FRAME = 1 << 20
"""A LOG frame larger than this is discarded unread."""

_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_REMOTE_STR = ("pathname", "filename", "module", "funcName", "threadName", "levelname")
_REMOTE_INT = ("lineno", "process")

_lock = threading.Lock()
# (prefix, sandbox) -> the registry entries records of that sandbox created. Keyed by the
# option set's key, which the sandbox cannot change: one sandbox cannot use up another's
# share, and there are only as many shares as the caller's code has option sets.
_created: dict[tuple[str, str], set[str]] = {}


def level(value: object) -> int:
    """A known level for what the sandbox sent."""
    if type(value) is not int:
        return logging.WARNING
    known = logging.DEBUG
    for lv in _LEVELS:
        if value >= lv:
            known = lv
    return known


def logger_name(prefix: str, remote: object, sandbox: str = "") -> str:
    """The caller's logger for the sandbox's logger ``remote`` (bounded, under ``prefix``)."""
    if type(remote) is not str or remote in ("", "root"):
        return prefix
    words = [_BAD.sub("_", w) for w in remote[:MAX_NAME].split(".") if w.strip(".")]
    words = [w for w in words if w][:MAX_DEPTH]
    if not words:
        return prefix
    name = prefix + "." + ".".join(words)
    with _lock:
        created = _created.setdefault((prefix, sandbox), set())
        if name in created:
            return name
        registry = logging.Logger.manager.loggerDict
        parts = name.split(".")
        missing = [
            p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p not in registry
        ]
        if len(created) + len(missing) > MAX_LOGGERS:
            return prefix
        created.update(missing)
        created.add(name)
    return name


def _text(value: object, limit: int = MAX_TEXT) -> str:
    text = value if type(value) is str else str(value)
    if len(text) > limit:
        text = text[:limit] + f" [... {len(text) - limit} more characters]"
    return escape_controls(text, keep="\n\t")


def make_record(
    fields: dict[Any, Any], prefix: str, unit: str, sandbox: str = ""
) -> logging.LogRecord:
    """The caller's LogRecord for a decoded record from the sandbox."""
    lv = level(fields.get("levelno"))
    record = logging.LogRecord(
        logger_name(prefix, fields.get("name"), sandbox),
        lv,
        f"<sandbox {unit}>",
        0,
        _text(fields.get("msg", "")),
        None,
        None,
    )
    exc_text = fields.get("exc_text")
    if exc_text is not None:
        record.exc_text = _text(exc_text)
    record.sandbox_unit = unit
    remote_name = fields.get("name")
    record.remote_name = _text(remote_name, MAX_FIELD) if type(remote_name) is str else None
    for key in _REMOTE_STR:
        value = fields.get(key)
        setattr(record, "remote_" + key, _text(value, MAX_FIELD) if type(value) is str else None)
    for key in _REMOTE_INT:
        value = fields.get(key)
        setattr(record, "remote_" + key, value if type(value) is int else None)
    created = fields.get("created")
    record.remote_created = created if type(created) is float else None
    return record


def emit(data: Any, prefix: str, unit: str, sandbox: str = "") -> None:
    """Re-emit a LOG frame's record in the caller; a malformed one is reported, not raised."""
    try:
        fields = codec.decode(data)
    except Exception:  # noqa: BLE001 - the sandbox's bytes never raise in the caller
        fields = None
    if type(fields) is not dict:
        dropped("a malformed log record", prefix, unit)
        return
    record = make_record(fields, prefix, unit, sandbox)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def dropped(what: str, prefix: str, unit: str) -> None:
    """Say on the prefix's logger that a record from the sandbox was dropped."""
    logging.getLogger(prefix).warning("sandbox %s sent %s; it was dropped", unit, what)
