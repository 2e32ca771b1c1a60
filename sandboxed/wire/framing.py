"""The wire framing between the caller and a worker: pure encoding plus two small I/O helpers.

A frame is a 16-byte header, a table of part lengths, then the parts::

    kind: u8 | flags: u8 | reserved: u16 | nparts: u32 | total: u64    (network order)
    len(part 0): u64 | ... | len(part n-1): u64
    part 0 | part 1 | ...

Parts let pickle protocol 5 out-of-band buffers travel without being copied
into one big byte string: the sender hands the socket a list of buffers
(``sendmsg`` gathers them) and the receiver reads each part straight into
its own ``bytearray``. ``total`` (the sum of the part lengths) is checked
against a limit *before* anything is allocated, so a hostile worker cannot
make the caller allocate an arbitrary amount of memory.
"""

from __future__ import annotations

import enum
import socket
import struct
import time

from sandboxed._errors import PayloadTooLargeError, ProtocolError

TYPE_CHECKING = False  # typing stays out of the sandbox's start-up
if TYPE_CHECKING:
    from collections.abc import Sequence

HEADER = struct.Struct("!BBHIQ")
LENGTH = struct.Struct("!Q")
MAX_PARTS = 1 << 16
DEFAULT_LIMIT = 4 << 30
SMALL_FRAME = 1 << 16
"""Frames whose parts total at most this many bytes are read with one read after the header."""

Buffer = bytes | bytearray | memoryview


class FrameType(enum.IntEnum):
    """What a frame carries."""

    CALL = 1  # caller -> worker: [header, pickled call, *buffers]
    RESULT = 2  # worker -> caller: [header, payload, *buffers]
    ERROR = 3  # worker -> caller: [header, payload]
    OUTPUT = 4  # worker -> caller: [stream name, bytes]
    LOG = 5  # worker -> caller: [codec-encoded record]
    READY = 6  # worker/supervisor -> caller: [codec-encoded info]
    SPAWN = 7  # caller -> supervisor: [worker id], with the worker's socket as SCM_RIGHTS
    SPAWNED = 8  # supervisor -> caller: [codec (id, pid)]
    EXITED = 9  # supervisor -> caller: [codec (id, pid, status)]
    KILL = 10  # caller -> supervisor: [codec (id, signal)]
    FAILED = 11  # supervisor/worker -> caller: [codec message]
    STARTED = 12  # worker -> caller: [] the call is loaded and its function starts now
    PARTIAL = 13  # worker -> caller: [codec (index, ok), *parts] one task of a batch is done
    UNKNOWN_FUNCTION = 17  # worker -> caller: [digest] not cached here: send the function
    ENV = 18  # caller -> supervisor: [name, value, name, value...] env= (never a unit property)


def encode_header(kind: FrameType, parts: Sequence[Buffer], flags: int = 0) -> bytes:
    """The header and length table that precede ``parts`` on the wire."""
    lengths = [memoryview(p).nbytes for p in parts]
    return HEADER.pack(int(kind), flags, 0, len(parts), sum(lengths)) + b"".join(
        LENGTH.pack(n) for n in lengths
    )


def decode_header(data: bytes, limit: int) -> tuple[FrameType, int, int, int]:
    """Parse a header: (kind, flags, nparts, total). Raises ProtocolError / PayloadTooLargeError."""
    kind, flags, _reserved, nparts, total = HEADER.unpack(data)
    try:
        k = FrameType(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None
    if nparts > MAX_PARTS:
        raise ProtocolError(f"frame declares {nparts} parts (at most {MAX_PARTS})")
    if total > limit:
        raise PayloadTooLargeError(f"{k.name.lower()} frame", total, limit)
    return k, flags, nparts, total


def send_frame(
    sock: socket.socket,
    kind: FrameType,
    parts: Sequence[Buffer],
    fds: Sequence[int] = (),
    flags: int = 0,
) -> None:
    """Write one frame (and optionally pass file descriptors with its first byte)."""
    if not fds:
        lengths = [len(p) if type(p) is not memoryview else p.nbytes for p in parts]
        total = sum(lengths)
        if total <= SMALL_FRAME:
            # One buffer, one write: joining a few hundred bytes is cheaper than gathering.
            sock.sendall(
                b"".join(
                    [
                        HEADER.pack(int(kind), flags, 0, len(parts), total),
                        struct.pack(f"!{len(lengths)}Q", *lengths),
                        *parts,
                    ]
                )
            )
            return
    views = [memoryview(encode_header(kind, parts, flags))]
    views.extend(memoryview(p).cast("B") for p in parts if memoryview(p).nbytes)
    if fds:
        import array

        first = views.pop(0)
        sent = sock.sendmsg(
            [first], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        )
        if sent < first.nbytes:
            views.insert(0, first[sent:])
    while views:
        sent = sock.sendmsg(views[:512])
        while sent and views:
            n = views[0].nbytes
            if sent >= n:
                sent -= n
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], min(n - got, 1 << 24))
        if r == 0:
            raise EOFError("the peer closed the channel")
        got += r
    return buf


def _recv_header(sock: socket.socket) -> bytes:
    data = sock.recv(HEADER.size)
    if len(data) == HEADER.size:
        return data
    if not data:
        raise EOFError("the peer closed the channel")
    return data + bytes(_recv_exact(sock, HEADER.size - len(data)))


def _split(buf: bytearray, nparts: int, total: int) -> list[bytearray]:
    """Parts of a small frame read in one go: its length table, then the parts."""
    lengths = struct.unpack_from(f"!{nparts}Q", buf)
    if sum(lengths) != total:
        raise ProtocolError("frame part lengths do not add up to its declared size")
    parts = []
    pos = LENGTH.size * nparts
    for n in lengths:
        parts.append(buf[pos : pos + n])
        pos += n
    return parts


def recv_frame(
    sock: socket.socket, limit: int = DEFAULT_LIMIT
) -> tuple[FrameType, int, list[bytearray]]:
    """Read one frame: (kind, flags, parts). Raises EOFError when the peer closed the channel."""
    kind, flags, nparts, total = decode_header(_recv_header(sock), limit)
    return kind, flags, _recv_parts(sock, nparts, total)


def _recv_parts(sock: socket.socket, nparts: int, total: int) -> list[bytearray]:
    """The length table and parts that follow a decoded header."""
    if total <= SMALL_FRAME:
        # Two reads per frame whatever its number of parts (a warm call is a few hundred
        # bytes): the copies of small parts cost less than a read each.
        return _split(_recv_exact(sock, LENGTH.size * nparts + total), nparts, total)
    table = _recv_exact(sock, LENGTH.size * nparts) if nparts else b""
    lengths = [LENGTH.unpack_from(table, i * LENGTH.size)[0] for i in range(nparts)]
    if sum(lengths) != total:
        raise ProtocolError("frame part lengths do not add up to its declared size")
    return [_recv_exact(sock, n) if n else bytearray() for n in lengths]


# -- reading against a deadline (the caller's side) ----------------------------------------------
#
# A hostile worker writes its frames as slowly as it likes: a timeout per recv() would let
# it stretch one frame forever, a byte at a time. These read with one absolute deadline
# (time.monotonic()) for every byte, and raise TimeoutError once it has passed, whatever
# was received so far. ``deadline=None`` reads without one.


def recv_into_by(sock: socket.socket, view: memoryview, deadline: float | None) -> None:
    """Fill ``view`` from ``sock`` before ``deadline``; EOFError if the peer closed first."""
    n = view.nbytes
    got = 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the frame was not complete at the deadline ({got} of {n})")
            sock.settimeout(remaining)
        r = sock.recv_into(view[got:], min(n - got, 1 << 24))
        if r == 0:
            raise EOFError("the peer closed the channel")
        got += r


def recv_exact_by(sock: socket.socket, n: int, deadline: float | None) -> bytearray:
    """``n`` bytes from ``sock``, all of them before ``deadline``."""
    buf = bytearray(n)
    if n:
        recv_into_by(sock, memoryview(buf), deadline)
    return buf


def recv_lengths_by(
    sock: socket.socket, nparts: int, total: int, deadline: float | None
) -> list[int]:
    """The length table of a frame whose header was read; ProtocolError if it does not add up."""
    table = recv_exact_by(sock, LENGTH.size * nparts, deadline)
    lengths = list(struct.unpack(f"!{nparts}Q", table))
    if sum(lengths) != total:
        raise ProtocolError("frame part lengths do not add up to its declared size")
    return lengths


def recv_frame_by(
    sock: socket.socket, deadline: float | None, limit: int = DEFAULT_LIMIT
) -> tuple[FrameType, int, int, int]:
    """Read a frame's header before ``deadline``: (kind, flags, nparts, total); the caller
    then reads the parts (:func:`recv_parts_by`, or streams them)."""
    return decode_header(bytes(recv_exact_by(sock, HEADER.size, deadline)), limit)


def recv_parts_by(
    sock: socket.socket, nparts: int, total: int, deadline: float | None
) -> list[bytearray]:
    """The parts of a frame whose header was read, all of them before ``deadline``."""
    if total <= SMALL_FRAME:
        buf = recv_exact_by(sock, LENGTH.size * nparts + total, deadline)
        return _split(buf, nparts, total)
    lengths = recv_lengths_by(sock, nparts, total, deadline)
    return [recv_exact_by(sock, n, deadline) for n in lengths]


def fds_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors of the SCM_RIGHTS messages in ``recvmsg``'s ancillary data."""
    import array

    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    return fds


def recv_frame_with_fds(
    sock: socket.socket, limit: int = DEFAULT_LIMIT
) -> tuple[FrameType, list[bytearray], list[int]]:
    """Like :func:`recv_frame`, also collecting file descriptors passed with the header."""
    fds: list[int] = []
    head = bytearray()
    while len(head) < HEADER.size:
        data, anc, _flags, _addr = sock.recvmsg(HEADER.size - len(head), socket.CMSG_SPACE(16 * 4))
        if not data:
            raise EOFError("the peer closed the channel")
        fds.extend(fds_from_ancillary(anc))
        head += data
    kind, _flags, nparts, total = decode_header(bytes(head), limit)
    return kind, _recv_parts(sock, nparts, total), fds
