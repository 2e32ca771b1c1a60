"""Parse uploaded files with no network and a read-only system.

Parsers of complex formats (images, PDFs, spreadsheets, archives...) are a
classic attack surface: a crafted upload can make a parser misbehave. Here the
parser runs in a sandbox where, whatever the file makes it do, it cannot reach
the network (``NoNetwork``), cannot change the system or the homes
(``ReadOnly``: everything read-only but a private /tmp), runs as ``nobody``,
and is held to a memory and time budget. The upload goes in as bytes and the
parsed summary comes back as plain data.

Run: python recipes/parse_uploads.py
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import zipfile

from sandboxed import AsUser, Memory, NoNetwork, ReadOnly, Timeout, sandboxed


@sandboxed(NoNetwork, ReadOnly, AsUser("nobody"), Memory("512M"), Timeout(10))
def parse_upload(filename: str, data: bytes) -> dict[str, object]:
    """Parse one upload; returns a summary. Runs in the sandbox."""
    # What a compromised parser could try: show that it would not get far.
    attempts = {}
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1)
        attempts["network"] = "reachable"
    except OSError as e:
        attempts["network"] = type(e).__name__
    try:
        with open("/etc/passwd", "a"):
            attempts["write /etc"] = "allowed"
    except OSError as e:
        attempts["write /etc"] = type(e).__name__
    # A scratch file in the private /tmp works (and is gone when the unit stops).
    with open(f"/tmp/{os.getpid()}.scratch", "wb") as f:
        f.write(data)

    if filename.endswith(".json"):
        doc = json.loads(data)
        summary: dict[str, object] = {"kind": "json", "keys": sorted(doc)}
    elif filename.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        summary = {"kind": "csv", "rows": len(rows), "columns": list(rows[0]) if rows else []}
    elif filename.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            summary = {"kind": "zip", "members": z.namelist()}
    else:
        raise ValueError(f"unsupported file type: {filename}")
    summary["uid"] = os.getuid()
    summary["attempts"] = attempts
    return summary


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
        z.writestr("b/c.txt", "world")
    return buf.getvalue()


UPLOADS = {
    "config.json": b'{"name": "demo", "size": 3}',
    "people.csv": b"name,age\nada,36\nalan,41\n",
    "bundle.zip": _zip(),
    "payload.exe": b"MZ\x90\x00",
}


def main() -> None:
    for name, data in UPLOADS.items():
        try:
            summary = parse_upload(name, data)
        except ValueError as e:  # the parser's own exception comes back as itself
            print(f"{name}: rejected: {e}")
            continue
        print(f"{name}: {summary}")
        assert summary["uid"] == 65534
        attempts = summary["attempts"]
        assert isinstance(attempts, dict)
        assert attempts["network"] != "reachable" and attempts["write /etc"] != "allowed"
        if name.endswith(".csv"):
            assert summary["rows"] == 2
    print("all uploads parsed in the sandbox")


if __name__ == "__main__":
    main()
