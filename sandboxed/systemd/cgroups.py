"""Reading a unit's cgroup files on the host side: CPU, memory, I/O, tasks, OOM kills.

The figures come from the kernel's cgroup files of the unit (not from inside
the unit). Both cgroup2 and the v1 controllers of a hybrid layout are read.
This module knows units and cgroups, nothing of sandboxes.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from sandboxed._errors import EmbeddedManagerError


@attrs.frozen
class CgroupMount:
    name: str  # path below /sys/fs/cgroup ("" for a pure cgroup2 host)
    type: str  # "cgroup" or "cgroup2"
    options: str  # controllers / name=..., as mounted on the host
    root: str  # the mount's root inside the hierarchy
    controllers: tuple[str, ...]


def _mountinfo() -> list[list[str]]:
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f]


def cgroup_mounts(mountinfo: list[list[str]] | None = None) -> tuple[str, list[CgroupMount]]:
    """Detect the host's cgroup layout: ("unified" | "hybrid" | "legacy", mounts).

    ``mountinfo`` (split lines of /proc/self/mountinfo) defaults to this process's.
    Raises :class:`EmbeddedManagerError` naming a layout it cannot support.
    """
    mounts: list[CgroupMount] = []
    top_type = None
    for fields in _mountinfo() if mountinfo is None else mountinfo:
        sep = fields.index("-")
        mountpoint, root = fields[4], fields[3]
        fstype, super_opts = fields[sep + 1], fields[sep + 3]
        if mountpoint == "/sys/fs/cgroup":
            top_type = fstype
        if fstype not in ("cgroup", "cgroup2") or not mountpoint.startswith("/sys/fs/cgroup"):
            continue
        name = mountpoint[len("/sys/fs/cgroup") :].lstrip("/")
        opts = [o for o in super_opts.split(",") if o not in ("rw", "ro")]
        if fstype == "cgroup":
            keep = [o for o in opts if not o.startswith(("release_agent", "clone_children"))]
            controllers = tuple(o for o in keep if o not in ("xattr", "noprefix", "nsdelegate"))
            mounts.append(CgroupMount(name, fstype, ",".join(keep), root, controllers))
        else:
            keep = [o for o in opts if o in ("nsdelegate", "memory_recursiveprot")]
            mounts.append(CgroupMount(name, fstype, ",".join(keep), root, ()))
    if top_type == "cgroup2":
        return "unified", [m for m in mounts if m.name == ""]
    has_v1_systemd = any(m.type == "cgroup" and "name=systemd" in m.controllers for m in mounts)
    has_v2 = any(m.type == "cgroup2" for m in mounts)
    if top_type == "tmpfs" and has_v1_systemd:
        return ("hybrid" if has_v2 else "legacy"), mounts
    raise EmbeddedManagerError(
        "unsupported cgroup layout: "
        + (f"/sys/fs/cgroup is {top_type}" if top_type else "nothing mounted at /sys/fs/cgroup")
        + (" without a name=systemd hierarchy" if top_type == "tmpfs" else "")
        + "; supported: a cgroup2 hierarchy at /sys/fs/cgroup (unified), or cgroup v1 "
        "controllers with name=systemd and optionally cgroup2 at /sys/fs/cgroup/unified (hybrid)"
    )


@attrs.frozen
class Usage:
    """What a unit used between a snapshot and now (see :meth:`CgroupProbe.delta`)."""

    cpu_time: float
    peak_memory: int | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    tasks: int | None


def delegated_controllers(
    control_group: str, uid: int, layout: str, mounts: Sequence[CgroupMount]
) -> tuple[frozenset[str] | None, str]:
    """The cgroup controllers a manager running as ``uid`` in ``control_group`` holds.

    Returns ``(controllers, why)``: ``controllers`` is None when the manager's cgroup
    cannot be seen from this process (another cgroup namespace or mount), ``why``
    explains a missing controller. On cgroup2 a manager holds what its cgroup's
    ``cgroup.controllers`` lists, if the cgroup is its own (delegated to ``uid``); on
    cgroup v1 a controller's hierarchy is held when the manager's directory there is
    writable by ``uid``, which systemd never grants to an unprivileged manager.
    """
    rel = control_group.strip("/")
    v2 = [m for m in mounts if m.type == "cgroup2"]
    v1 = [m for m in mounts if m.type == "cgroup" and m.controllers]

    def path(m: CgroupMount) -> str:
        base = "/sys/fs/cgroup/" + m.name if m.name else "/sys/fs/cgroup"
        return os.path.join(base, rel)

    if layout == "unified":
        if not v2 or not os.path.isdir(path(v2[0])):
            return None, f"cannot see the manager's cgroup /{rel} from here"
        d = path(v2[0])
        if os.stat(d).st_uid != uid:
            return frozenset(), f"its cgroup /{rel} is not delegated to uid {uid}"
        try:
            with open(os.path.join(d, "cgroup.controllers")) as f:
                held = frozenset(f.read().split())
        except OSError as e:
            return None, f"cannot read {d}/cgroup.controllers: {e.strerror}"
        return held, f"its cgroup /{rel} holds only: {', '.join(sorted(held)) or 'none'}"
    named = [m for m in mounts if m.type == "cgroup" and "name=systemd" in m.controllers]
    if named and not os.path.isdir(path(named[0])):
        return None, f"cannot see the manager's cgroup /{rel} from here"
    owned: set[str] = set()
    for m in v1:
        d = path(m)
        if os.path.isdir(d) and os.stat(d).st_uid == uid:
            owned.update(c for c in m.controllers if not c.startswith("name="))
    return frozenset(owned), (
        f"{layout} cgroups: systemd does not delegate cgroup v1 controllers to an "
        "unprivileged manager"
    )


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _keyed(text: str | None, key: str) -> int | None:
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


@attrs.define
class _Snapshot:
    cpu_ns: int | None
    io: tuple[int, int] | None
    peak_fd: int | None
    pids_hits: int = 0


class CgroupProbe:
    """Reads a unit's cgroup files; resolves where they are on first use."""

    def __init__(self, unit: str, location: Any, client: Callable[[], Any]) -> None:
        """``client`` returns a connected manager client (asked once, for ControlGroup)."""
        self.unit = unit
        self.location = location
        self._client = client
        self._dirs: dict[str, str] | None = None
        self._oom_seen = 0
        # Every call reads these files twice: resolve each once and keep it open
        # (pread on an open cgroup file costs ~2 us, open+read+close ~40 us).
        self._files: dict[tuple[tuple[str, str], ...], str | None] = {}
        self._fds: dict[str, int] = {}
        self._closed = False
        weakref.finalize(self, _close_all, self._fds)

    def close(self) -> None:
        """Close the cgroup files kept open (when the unit stops: not left to the GC)."""
        self._closed = True
        _close_all(self._fds)

    def dirs(self) -> dict[str, str]:
        if self._dirs is None:
            client = self._client()
            cg = str(
                client.get_property(
                    client.unit_path(self.unit), "org.freedesktop.systemd1.Service", "ControlGroup"
                )
            )
            dirs = {}
            for name in ("unified", "cpuacct", "memory", "blkio", "pids", "cpu"):
                d = self.location.cgroup_dir(name, cg) if cg else None
                if d and os.path.isdir(d):
                    dirs[name] = d
            if not dirs and cg:
                d = "/sys/fs/cgroup" + cg
                if os.path.isdir(d):
                    dirs["unified"] = d
            self._dirs = dirs
        return self._dirs

    def _file(self, *candidates: tuple[str, str]) -> str | None:
        try:
            return self._files[candidates]
        except KeyError:
            pass
        dirs = self.dirs()
        found = None
        for hierarchy, name in candidates:
            d = dirs.get(hierarchy)
            if d and os.path.exists(os.path.join(d, name)):
                found = os.path.join(d, name)
                break
        self._files[candidates] = found
        return found

    def _read(self, path: str) -> str | None:
        """The file's current contents, through a descriptor kept open."""
        fd = self._fds.get(path)
        try:
            if fd is None:
                opened = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                if self._closed:  # the unit stopped meanwhile: keep nothing open
                    try:
                        return os.pread(opened, 1 << 16, 0).decode()
                    finally:
                        os.close(opened)
                fd = self._fds.setdefault(path, opened)
                if fd != opened:
                    os.close(opened)
            return os.pread(fd, 1 << 16, 0).decode()
        except OSError:
            return None

    def cpu_ns(self) -> int | None:
        f = self._file(("unified", "cpu.stat"))
        if f is not None:
            usec = _keyed(self._read(f), "usage_usec")
            if usec is not None:
                return usec * 1000
        f = self._file(("cpuacct", "cpuacct.usage"), ("cpu", "cpuacct.usage"))
        if f is not None:
            text = self._read(f)
            return int(text) if text and text.strip().isdigit() else None
        return None

    def io_bytes(self) -> tuple[int, int] | None:
        f = self._file(("unified", "io.stat"))
        if f is not None:
            r = w = 0
            for line in (self._read(f) or "").splitlines():
                for field in line.split()[1:]:
                    k, _, v = field.partition("=")
                    if k == "rbytes":
                        r += int(v)
                    elif k == "wbytes":
                        w += int(v)
            return r, w
        f = self._file(
            ("blkio", "blkio.throttle.io_service_bytes_recursive"),
            ("blkio", "blkio.throttle.io_service_bytes"),
        )
        if f is not None:
            r = w = 0
            for line in (self._read(f) or "").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    r += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    w += int(parts[2])
            return r, w
        return None

    def _reset_peak(self) -> int | None:
        f = self._file(("unified", "memory.peak"))
        if f is not None:
            with contextlib.suppress(OSError):
                fd = os.open(f, os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.write(fd, b"0")
                except OSError:
                    os.close(fd)
                    return None
                return fd
        f = self._file(("memory", "memory.max_usage_in_bytes"))
        if f is not None:
            with contextlib.suppress(OSError):
                wfd = self._fds.get("w:" + f)
                if wfd is None and not self._closed:
                    wfd = self._fds["w:" + f] = os.open(f, os.O_WRONLY | os.O_CLOEXEC)
                if wfd is not None:
                    os.write(wfd, b"0")
        return None

    def peak_memory(self, fd: int | None) -> int | None:
        if fd is not None:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                return int(os.read(fd, 64).decode().strip())
            except (OSError, ValueError):
                return None
            finally:
                os.close(fd)
        f = self._file(("memory", "memory.max_usage_in_bytes"), ("unified", "memory.peak"))
        text = self._read(f) if f else None
        return int(text) if text and text.strip().isdigit() else None

    def tasks(self) -> int | None:
        for hierarchy in ("unified", "pids"):
            for name in ("pids.peak", "pids.current"):
                f = self._file((hierarchy, name))
                if f:
                    text = self._read(f)
                    if text and text.strip().isdigit():
                        return int(text)
        return None

    def snapshot(self) -> _Snapshot:
        return _Snapshot(self.cpu_ns(), self.io_bytes(), self._reset_peak(), 0)

    def snapshot_with_pids(self) -> _Snapshot:
        """:meth:`snapshot`, plus the count of forks refused by TasksMax= so far."""
        snap = self.snapshot()
        snap.pids_hits = self.pids_limit_hits()
        return snap

    def delta(self, before: _Snapshot) -> Usage:
        cpu = self.cpu_ns()
        io = self.io_bytes()
        return Usage(
            cpu_time=((cpu - before.cpu_ns) / 1e9)
            if cpu is not None and before.cpu_ns is not None
            else 0.0,
            peak_memory=self.peak_memory(before.peak_fd),
            io_read_bytes=(io[0] - before.io[0]) if io and before.io else None,
            io_write_bytes=(io[1] - before.io[1]) if io and before.io else None,
            tasks=self.tasks(),
        )

    def pids_limit_hits(self) -> int:
        """How often a fork or clone in the unit failed on ``TasksMax=`` (pids.events "max")."""
        f = self._file(("unified", "pids.events"), ("pids", "pids.events"))
        return (_keyed(self._read(f), "max") if f else None) or 0

    def oom_kills(self) -> int:
        f = self._file(("unified", "memory.events"))
        n = _keyed(self._read(f), "oom_kill") if f else None
        if n is None:
            f = self._file(("memory", "memory.oom_control"))
            n = _keyed(self._read(f), "oom_kill") if f else None
        return n or 0

    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer struck in this unit since we last asked."""
        try:
            n = self.oom_kills()
        except Exception:  # noqa: BLE001
            return False
        seen, self._oom_seen = self._oom_seen, n
        return n > seen


def _close_all(fds: dict[str, int]) -> None:
    # popitem, not a loop over the dict: the unit's reader thread and a caller may
    # both close it.
    while True:
        try:
            _path, fd = fds.popitem()
        except KeyError:
            return
        with contextlib.suppress(OSError):
            os.close(fd)
