"""A small, thread-safe D-Bus client for systemd's manager, on jeepney's sans-I/O layer.

jeepney's own blocking connections send ``Hello()`` when they open, which the
manager's peer-to-peer private socket (``/run/systemd/private``) rejects, so we
drive jeepney's :class:`Authenticator`, :meth:`Message.serialise` and
:class:`Parser` over our own socket. One reader thread per connection hands
replies to the callers waiting for them (by serial) and signals to the
subscribers that asked for them, so many threads can share one connection.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from jeepney import DBusAddress, HeaderFields, Message, MessageType, new_method_call
from jeepney.auth import BEGIN, Authenticator
from jeepney.low_level import Parser

from sandboxed._errors import (
    ConnectionLost,
    DBusError,
    DirectiveRejectedError,
    ManagerAccessDeniedError,
    ManagerError,
    ManagerNotFoundError,
    ManagerUnavailableError,
    UnitFailedError,
)
from sandboxed.wire.framing import fds_from_ancillary

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPS_IFACE = "org.freedesktop.DBus.Properties"

Property = tuple[str, str, object]

_MANAGER = DBusAddress(MANAGER_PATH, bus_name=SYSTEMD, interface=MANAGER_IFACE)

# How long a start keeps trying while the manager reloads, re-executes or comes
# back (a re-exec takes well under a second; on a busy machine, a few).
MANAGER_RETRY_SECONDS = 30.0
# D-Bus errors that mean "the manager is not there right now", not "no".
_UNAVAILABLE = frozenset(
    {
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)


def manager_unavailable(err: BaseException) -> bool:
    """True when ``err`` says the manager could not answer (reloading, re-executing,
    restarting, gone), as opposed to an answer: worth retrying, on a new connection."""
    if isinstance(err, ManagerUnavailableError):
        return True
    return isinstance(err, DBusError) and err.name in _UNAVAILABLE


def parse_address(address: str) -> str:
    """Return the socket path of a ``unix:path=...`` D-Bus address (or of a bare path)."""
    if address.startswith("/"):
        return address
    for part in address.split(";"):
        if not part.startswith("unix:"):
            continue
        for kv in part[len("unix:") :].split(","):
            key, _, value = kv.partition("=")
            if key == "path":
                return value
            if key == "abstract":
                return "\0" + value
    raise ManagerError(
        f"unsupported D-Bus address {address!r}; "
        "accepted: 'unix:path=/some/socket' or a socket path"
    )


def unit_object_path(name: str) -> str:
    """The object path systemd gives a unit (``bus_label_escape``)."""
    out = []
    for ch in name.encode():
        c = chr(ch)
        if c.isascii() and c.isalnum():
            out.append(c)
        else:
            out.append(f"_{ch:02x}")
    return "/org/freedesktop/systemd1/unit/" + "".join(out)


class Connection:
    """One authenticated D-Bus connection with a reader thread.

    ``peer_to_peer`` is detected: on a message bus ``Hello()`` succeeds; the
    manager's private socket (``.../private``) needs none and answers it with an
    error. Raises :class:`ManagerUnavailableError` when nothing answers.
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        path = parse_address(address)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
            self._authenticate()
        except OSError as e:
            self._sock.close()
            raise ManagerUnavailableError(
                f"cannot connect to the service manager at {address}: {e}"
            ) from e
        self._sock.settimeout(None)
        self._send_lock = threading.Lock()
        self._serials = itertools.count(1)
        self._pending: dict[int, Future[Message]] = {}
        self._pending_lock = threading.Lock()
        self._listeners: list[Callable[[Message | None], None]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="sandboxed-dbus", daemon=True)
        self._reader.start()
        self.peer_to_peer = False
        self.unique_name: str | None = None
        self._handshake(path, timeout)

    def _handshake(self, path: str, timeout: float) -> None:
        """Say Hello on a message bus; on a manager's private socket (peer-to-peer),
        make sure it listens.

        systemd's private socket (seen on 252) may leave a message that arrived
        together with the end of authentication unread until more data comes, so
        the first call would hang: it is nudged with ``Peer.Ping`` until it
        answers. A message bus answers Hello at once and disconnects clients that
        send anything before it, so it is nudged only when Hello goes unanswered
        for a second, which only a peer-to-peer socket does.
        """
        bus = DBusAddress("/org/freedesktop/DBus", "org.freedesktop.DBus", "org.freedesktop.DBus")
        ping = DBusAddress("/", bus_name=SYSTEMD, interface="org.freedesktop.DBus.Peer")
        private = os.path.basename(path) == "private"
        first = self.send(new_method_call(ping if private else bus, "Ping" if private else "Hello"))
        deadline = time.monotonic() + timeout
        nudge_after = time.monotonic() + (0.0 if private else 1.0)
        while True:
            try:
                reply = first.result(min(0.1, max(deadline - time.monotonic(), 0.0)))
                break
            except FutureTimeout:
                if time.monotonic() >= deadline:
                    self.close()
                    raise ManagerUnavailableError(
                        f"the service manager at {self.address} did not answer within {timeout:g} s"
                    ) from None
                if time.monotonic() >= nudge_after:
                    self.send(new_method_call(ping, "Ping"))
            except ConnectionLost:
                self.close()
                raise
        if private or reply.header.message_type == MessageType.error:
            self.peer_to_peer = True
        else:
            self.unique_name = str(reply.body[0])

    def peer_uid(self) -> int:
        """The uid of the process at the other end of the socket (SO_PEERCRED)."""
        creds = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return int.from_bytes(creds[4:8], sys.byteorder)

    def _authenticate(self) -> None:
        auth = Authenticator(enable_fds=True)
        for data in auth:
            self._sock.sendall(data)
            chunk = self._sock.recv(1024)
            if not chunk:
                raise ConnectionError("the peer closed the connection during authentication")
            auth.feed(chunk)
        self._sock.sendall(BEGIN)

    # -- I/O ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        parser = Parser()
        try:
            while True:
                data, ancdata, _flags, _addr = self._sock.recvmsg(
                    1 << 16, socket.CMSG_SPACE(253 * 4)
                )
                if not data:
                    break
                parser.add_data(data, fds_from_ancillary(ancdata))
                while (msg := parser.get_next_message()) is not None:
                    self._dispatch(msg)
        except OSError:
            pass
        finally:
            with self._pending_lock:
                self._closed = True
                pending, self._pending = self._pending, {}
            # Listeners first: a caller woken by ConnectionLost must already see what
            # the loss means (runtime.client bumps the manager's generation, so a start
            # that failed as a re-exec dropped us is retried, not reported).
            for listener in list(self._listeners):
                with contextlib.suppress(Exception):
                    listener(None)
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(f"connection to {self.address} lost"))

    def _dispatch(self, msg: Message) -> None:
        kind = msg.header.message_type
        if kind in (MessageType.method_return, MessageType.error):
            serial = msg.header.fields.get(HeaderFields.reply_serial)
            with self._pending_lock:
                fut = self._pending.pop(serial, None) if serial is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == MessageType.signal:
            for listener in list(self._listeners):
                with contextlib.suppress(Exception):
                    listener(msg)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, msg: Message) -> Future[Message]:
        """Send a message; the future resolves to its reply (method calls only)."""
        if self._closed:
            raise ConnectionLost(f"connection to {self.address} is closed")
        fut: Future[Message] = Future()
        with self._send_lock:
            serial = next(self._serials)
            fds: list[int] = []
            data = msg.serialise(serial=serial, fds=fds)
            with self._pending_lock:
                # Checked under the lock the reader takes when it fails every pending
                # call, so a call made as the connection drops cannot wait forever.
                if self._closed:
                    raise ConnectionLost(f"connection to {self.address} is closed")
                self._pending[serial] = fut
            try:
                if fds:
                    self._sock.sendmsg(
                        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    )
                else:
                    self._sock.sendall(data)
            except OSError as e:
                with self._pending_lock:
                    self._pending.pop(serial, None)
                raise ConnectionLost(f"cannot send to {self.address}: {e}") from e
        return fut

    def call(self, msg: Message, timeout: float | None = 30.0) -> Message:
        """Send a method call and return its reply; error replies raise :class:`DBusError`,
        no reply within ``timeout`` a :class:`ManagerError` saying so."""
        member = msg.header.fields.get(HeaderFields.member, "?")
        try:
            reply = self.send(msg).result(timeout)
        except TimeoutError:
            raise ManagerError(
                f"the service manager at {self.address} did not answer {member}() within "
                f"{timeout:g} s (overloaded, or hung)"
            ) from None
        if reply.header.message_type == MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, "?"))
            text = str(reply.body[0]) if reply.body else ""
            if name == "org.freedesktop.DBus.Error.NoReply":
                text = (
                    f"the service manager did not answer {member}() in time (overloaded, "
                    f"or hung); the bus said: {text}"
                )
            raise DBusError(name, text)
        return reply

    def add_listener(self, fn: Callable[[Message | None], None]) -> None:
        self._listeners.append(fn)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


_NO_MANAGER = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
)
_DENIED = (
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
)


class ManagerClient:
    """Typed calls to ``org.freedesktop.systemd1.Manager`` over one :class:`Connection`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._conn = Connection(address)
        # Jobs awaited by a caller, and JobRemoved results that arrived while a call
        # that creates a job was still waiting for its reply (the signal can beat the
        # reply). Kept only while such calls are in flight, so they cannot pile up.
        self._jobs: dict[str, Future[str]] = {}
        self._early: dict[str, str] = {}
        self._inflight = 0
        self._jobs_lock = threading.Lock()
        # Reloading signals seen (both edges): a reload or re-exec re-reads every
        # unit, so what a unit was before one has to be checked again after it.
        self.reloads = 0
        self._reload_listeners: list[Callable[[bool], None]] = []
        self._conn.add_listener(self._on_signal)
        if not self._conn.peer_to_peer:
            # On a message bus signals only reach clients that ask for them. No
            # Subscribe(): the manager sends a job's JobRemoved to the client that
            # queued it without one, and a subscriber makes it emit every unit's
            # property changes on the bus (measured: ~1 ms of its CPU per unit start).
            # Reloading reaches a bus client only while some client is subscribed
            # (the private socket gets it always); asked for anyway, and
            # runtime.client checks units now and then where it may not come.
            for member in ("JobRemoved", "Reloading"):
                self._bus_call(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "AddMatch",
                    "s",
                    (
                        "type='signal',sender='org.freedesktop.systemd1',"
                        f"interface='org.freedesktop.systemd1.Manager',member='{member}'",
                    ),
                )
        self._version: str | None = None
        self._manager_uid: int | None = None

    # -- plumbing ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def close(self) -> None:
        self._conn.close()

    def on_reload(self, fn: Callable[[bool], None]) -> None:
        """Call ``fn(active)`` on each ``Reloading`` signal: True as a reload or
        re-exec begins, False once the manager has loaded its units again (and
        False when the connection is lost: a re-exec drops peer-to-peer ones)."""
        self._reload_listeners.append(fn)

    def _bus_call(
        self,
        dest: str,
        path: str,
        iface: str,
        method: str,
        sig: str | None = None,
        body: tuple[Any, ...] = (),
    ) -> tuple[Any, ...]:
        msg = new_method_call(DBusAddress(path, bus_name=dest, interface=iface), method, sig, body)
        return tuple(self._conn.call(msg).body)

    def manager_call(self, method: str, sig: str | None = None, *body: Any) -> tuple[Any, ...]:
        return self._bus_call(SYSTEMD, MANAGER_PATH, MANAGER_IFACE, method, sig, body)

    def _on_signal(self, msg: Message | None) -> None:
        if msg is None:
            with self._jobs_lock:
                jobs, self._jobs = self._jobs, {}
            for waiting in jobs.values():
                if not waiting.done():
                    waiting.set_exception(ConnectionLost(f"connection to {self.address} lost"))
            # A re-exec drops peer-to-peer connections: its Reloading signals are lost.
            for fn in list(self._reload_listeners):
                with contextlib.suppress(Exception):
                    fn(False)
            return
        member = msg.header.fields.get(HeaderFields.member)
        if member == "Reloading":
            self.reloads += 1
            active = bool(msg.body[0]) if msg.body else False
            for fn in list(self._reload_listeners):
                with contextlib.suppress(Exception):
                    fn(active)
            return
        if member != "JobRemoved":
            return
        _id, job_path, _unit, result = msg.body
        with self._jobs_lock:
            fut = self._jobs.get(str(job_path))
            if fut is None and self._inflight:
                self._early[str(job_path)] = str(result)
        if fut is not None and not fut.done():
            fut.set_result(str(result))

    def _job_call(self, msg: Message, timeout: float, wait: bool) -> str:
        """Send a call that queues a job and return the job's result (``"queued"``
        without ``wait``); :class:`DBusError` from the call itself propagates."""
        with self._jobs_lock:
            self._inflight += 1
        fut: Future[str] | None = None
        try:
            (job_path,) = self._conn.call(msg, timeout=timeout).body
            path = str(job_path)
            if wait:
                fut = Future()
                with self._jobs_lock:
                    if path in self._early:
                        fut.set_result(self._early.pop(path))
                    else:
                        self._jobs[path] = fut
        finally:
            with self._jobs_lock:
                self._inflight -= 1
                if not self._inflight:
                    self._early.clear()
        if fut is None:
            return "queued"
        try:
            return fut.result(timeout)
        except FutureTimeout:
            member = msg.header.fields.get(HeaderFields.member, "?")
            raise ManagerError(
                f"the job {path} that {member}() queued did not finish within {timeout:g} s"
            ) from None
        finally:
            with self._jobs_lock:
                self._jobs.pop(path, None)

    # -- API ---------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The manager's version string, e.g. ``"252.38-1~deb12u1"``."""
        if self._version is None:
            self._version = str(self.get_property(MANAGER_PATH, MANAGER_IFACE, "Version"))
        return self._version

    @property
    def manager_uid(self) -> int:
        """The uid the manager runs as: 0 for a system manager, the user's for ``systemd --user``.

        Asked of the bus (the owner of ``org.freedesktop.systemd1``) or, on a
        peer-to-peer socket, of the kernel (the peer's credentials).
        """
        if self._manager_uid is None:
            if self._conn.peer_to_peer:
                self._manager_uid = self._conn.peer_uid()
            else:
                try:
                    (uid,) = self._bus_call(
                        "org.freedesktop.DBus",
                        "/org/freedesktop/DBus",
                        "org.freedesktop.DBus",
                        "GetConnectionUnixUser",
                        "s",
                        (SYSTEMD,),
                    )
                except DBusError as e:
                    if e.name not in _NO_MANAGER:
                        raise
                    raise ManagerNotFoundError(
                        f"no systemd manager on the bus at {self.address} ({e.name}); use a "
                        "session whose bus has one (a login through pam_systemd starts "
                        "`systemd --user`), or point SANDBOXED_MANAGER at a manager"
                    ) from None
                self._manager_uid = int(uid)
        return self._manager_uid

    def manager_property(self, name: str) -> Any:
        """A property of the manager object (``ControlGroup``, ``Environment``...)."""
        return self.get_property(MANAGER_PATH, MANAGER_IFACE, name)

    @property
    def version_number(self) -> int:
        digits = ""
        for ch in self.version:
            if not ch.isdigit():
                break
            digits += ch
        return int(digits or 0)

    def get_property(self, path: str, iface: str, name: str) -> Any:
        (variant,) = self._bus_call(SYSTEMD, path, PROPS_IFACE, "Get", "ss", (iface, name))
        return variant[1]

    def get_all(self, path: str, iface: str) -> dict[str, Any]:
        (props,) = self._bus_call(SYSTEMD, path, PROPS_IFACE, "GetAll", "s", (iface,))
        return {k: v[1] for k, v in props.items()}

    def get_unit_properties(self, name: str, iface: str = UNIT_IFACE) -> dict[str, Any]:
        """All properties of ``iface`` of a loaded unit."""
        return self.get_all(self.unit_path(name), iface)

    def unit_path(self, name: str) -> str:
        try:
            (path,) = self.manager_call("GetUnit", "s", name)
        except DBusError as e:
            if e.name == "org.freedesktop.systemd1.NoSuchUnit":
                return unit_object_path(name)
            raise
        return str(path)

    def start_transient_unit(
        self,
        name: str,
        properties: Sequence[Property],
        mode: str = "fail",
        aux: Iterable[tuple[str, Sequence[Property]]] = (),
        timeout: float = 60.0,
        wait: bool = True,
        name_property: Callable[[str], str] | None = None,
    ) -> str:
        """Start a transient unit and (by default) wait for its start job to finish.

        ``properties`` are ``(bus name, D-Bus signature, value)`` triples. Returns
        the job's result (``"done"``). Raises :class:`DirectiveRejectedError` when
        the manager refuses a property (named by ``name_property(bus_name)`` when
        given: this module knows bus properties, not directives), :class:`UnitFailedError`
        when the job fails.
        """
        props = [(n, (sig, val)) for n, sig, val in properties]
        aux_units = [(n, [(pn, (ps, pv)) for pn, ps, pv in p]) for n, p in aux]
        msg = new_method_call(
            _MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", (name, mode, props, aux_units)
        )
        try:
            result = self._job_call(msg, timeout, wait)
        except DBusError as e:
            raise self.rejection(e, properties, name_property) from e
        if result not in ("done", "queued"):
            raise UnitFailedError(name, result)
        return result

    def rejection(
        self,
        err: DBusError,
        properties: Sequence[Property],
        name_property: Callable[[str], str] | None = None,
    ) -> ManagerError:
        """Turn a D-Bus error from StartTransientUnit into an error naming the directive."""
        if err.name in _DENIED:
            return ManagerAccessDeniedError(
                self.address,
                os.geteuid(),
                err.name,
                "run as root, or use your own user manager (the default for a caller that "
                "is not root: unset SANDBOXED_MANAGER); a system manager starts units only "
                "for root or for whom polkit grants org.freedesktop.systemd1.manage-units",
            )
        rejected = (
            err.name
            in (
                "org.freedesktop.DBus.Error.InvalidArgs",
                "org.freedesktop.DBus.Error.PropertyReadOnly",
                "org.freedesktop.DBus.Error.NotSupported",
                "System.Error.ENXIO",
                "System.Error.EINVAL",
            )
            or "Cannot set property" in err.text
            or "Unknown assignment" in err.text
        )
        if not rejected:
            return err
        prop = next((n for n, _s, _v in properties if n in err.text), None)
        if prop is None:
            # "Unexpected message contents" names nothing: find the culprit by
            # offering the properties to throwaway units, halving the set each time.
            prop = self._find_rejected([p for p in properties if p[1] != "h"])
        if prop is not None and name_property is not None:
            prop = name_property(prop)
        return DirectiveRejectedError(prop, self.version, err.name, err.text)

    def _find_rejected(self, properties: list[Property]) -> str | None:
        import secrets

        def accepted(subset: list[Property]) -> bool:
            name = f"sandboxed-probe-{os.getpid()}-{secrets.token_hex(4)}.service"
            base: list[Property] = [
                ("ExecStart", "a(sasb)", [("/bin/true", ["/bin/true"], False)]),
                ("CollectMode", "s", "inactive-or-failed"),
            ]
            msg = new_method_call(
                _MANAGER,
                "StartTransientUnit",
                "ssa(sv)a(sa(sv))",
                (name, "fail", [(n, (sg, v)) for n, sg, v in [*base, *subset]], []),
            )
            try:
                self._conn.call(msg, timeout=10)
            except DBusError:
                return False
            with contextlib.suppress(Exception):
                self.stop_unit(name, wait=False)
            return True

        if not properties or accepted(properties):
            return None
        candidates = [p for p in properties if p[0] not in ("ExecStart", "CollectMode")]
        while len(candidates) > 1:
            half = candidates[: len(candidates) // 2]
            candidates = candidates[len(candidates) // 2 :] if accepted(half) else half
        return candidates[0][0] if candidates else None

    def stop_unit(
        self, name: str, mode: str = "replace", wait: bool = True, timeout: float = 60.0
    ) -> str:
        """Stop a unit; returns the job result, or ``"gone"`` if it was not loaded."""
        msg = new_method_call(_MANAGER, "StopUnit", "ss", (name, mode))
        try:
            return self._job_call(msg, timeout, wait)
        except DBusError as e:
            if e.name == "org.freedesktop.systemd1.NoSuchUnit":
                return "gone"
            raise

    @property
    def peer_to_peer(self) -> bool:
        """True on the manager's private socket (no bus: no per-client unit references;
        the manager announces reloads to it unasked)."""
        return self._conn.peer_to_peer

    def unref_unit(self, name: str) -> None:
        """Drop the reference taken with the ``AddRef`` property (the unit may be collected)."""
        with contextlib.suppress(ManagerError):
            self._bus_call(SYSTEMD, unit_object_path(name), UNIT_IFACE, "Unref")

    def reset_failed_unit(self, name: str) -> None:
        with contextlib.suppress(DBusError):
            self.manager_call("ResetFailedUnit", "s", name)

    def list_units(self, patterns: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        """``ListUnitsByPatterns``: (name, description, load, active, sub, following, path, ...)."""
        (units,) = self.manager_call("ListUnitsByPatterns", "asas", [], list(patterns))
        return [tuple(u) for u in units]


def is_socket_alive(path: str, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the Unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR, errno.EACCES):
            return False
        return False
    finally:
        s.close()
    return True
