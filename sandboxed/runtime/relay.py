"""What a worker sends besides its result: its output and its log records, replayed here."""

from __future__ import annotations

import logging
import sys

from sandboxed.wire import codec, frames


def write_output(stream: bytes, data: bytearray) -> None:
    target = sys.stderr if stream == b"stderr" else sys.stdout
    text = bytes(data).decode("utf-8", errors="replace")
    try:
        target.write(text)
        target.flush()
    except (OSError, ValueError):
        pass


def emit_log(data: bytearray) -> None:
    try:
        rec = codec.decode(data)
    except Exception:  # noqa: BLE001 - a malformed record is dropped, not raised in the caller
        return
    if not isinstance(rec, dict):
        return
    fields = {k: v for k, v in rec.items() if k in frames.LOG_FIELDS}
    fields["args"] = None
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(str(fields.get("name", "root")))
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
