"""Attacks on the containment baseline, run from inside a sandbox (keep imports light).

Each attack class is one function that tries *every* way out it knows of that
class and returns ``{way: outcome}``, where an outcome is ``"ok"`` when that way
worked (see :func:`escape_kit.attempt`). The probes are chosen so that a control
run, where nothing stops them, does no harm to the host: a signal probe sends
signal 0, ``reboot()`` and ``kexec_load()`` get a bad magic number or bad
arguments (the kernel checks the capability first and returns EPERM without
it, EINVAL after it), ``init_module()`` gets an empty image, and a write
through another process's root goes to a throw-away file the test names.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import stat
from typing import Any

from escape_kit import OK, attempt

_NR = {
    "x86_64": {
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "bpf": 321,
        "perf_event_open": 298,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "reboot": 169,
        "userfaultfd": 323,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "setns": 308,
        "unshare": 272,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "pidfd_open": 434,
        "pidfd_getfd": 438,
        "pidfd_send_signal": 424,
        "kill": 62,
        "tkill": 200,
        "tgkill": 234,
        "rt_sigqueueinfo": 129,
        "umount2": 166,
        "mount": 165,
        "open_by_handle_at": 304,
        "name_to_handle_at": 303,
        "fsopen": 430,
        "open_tree": 428,
        "move_mount": 429,
        "chroot": 161,
        "pivot_root": 155,
        "swapoff": 168,
        "acct": 163,
        "iopl": 172,
        "ioperm": 173,
        "syslog": 103,
        "settimeofday": 164,
        "clock_adjtime": 305,
        "mknodat": 259,
    },
    "aarch64": {
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "bpf": 280,
        "perf_event_open": 241,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "reboot": 142,
        "userfaultfd": 282,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "setns": 268,
        "unshare": 97,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "pidfd_open": 434,
        "pidfd_getfd": 438,
        "pidfd_send_signal": 424,
        "kill": 129,
        "tkill": 130,
        "tgkill": 131,
        "rt_sigqueueinfo": 138,
        "umount2": 39,
        "mount": 40,
        "open_by_handle_at": 265,
        "name_to_handle_at": 264,
        "fsopen": 430,
        "open_tree": 428,
        "move_mount": 429,
        "chroot": 51,
        "pivot_root": 41,
        "swapoff": 225,
        "acct": 89,
        "syslog": 116,
        "settimeofday": 170,
        "clock_adjtime": 266,
        "mknodat": 33,
    },
}

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MNT_DETACH = 2
MS_REMOUNT, MS_BIND = 32, 4096
AF_VSOCK = 40
VMADDR_CID_ANY = 0xFFFFFFFF


def syscall(name: str, *args: Any) -> int:
    """Call system call ``name`` directly (no libc wrapper, no seccomp-aware fallback)."""
    libc = ctypes.CDLL(None, use_errno=True)
    nr = _NR[os.uname().machine][name]
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(r)


def _fails_only_after_the_check(name: str, *args: Any) -> None:
    """A call with bad arguments: EINVAL/EFAULT/ENOEXEC/EBADF... mean the privilege check
    passed (the attack is possible), EPERM/EACCES/ENOSYS mean it was refused."""
    try:
        fd = syscall(name, *args)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            raise
        return  # got past the permission check: counts as reachable
    if name in ("bpf", "perf_event_open", "io_uring_setup"):
        os.close(fd)


# -- privileged sockets -------------------------------------------------------------------

SOCKET_ROOTS = ("/run", "/var/run", "/dev", "/var/lib", "/tmp", "/var/tmp")


def socket_files(roots: tuple[str, ...] = SOCKET_ROOTS, limit: int = 400) -> list[str]:
    """Every Unix socket file under ``roots`` that this process can see (bounded walk)."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            try:
                st = os.stat(dirpath)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    if stat.S_ISSOCK(os.lstat(p).st_mode):
                        found.append(p)
                except OSError:
                    pass
            if len(found) >= limit:
                return found
    return found


def _connect(path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError as e:
        if e.errno != errno.EPROTOTYPE:
            raise
        s.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(path)
    finally:
        s.close()


def privileged_sockets(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Connect to every Unix socket file visible in /run (and other shared places), and to
    the manager's and bus's well-known paths whether listed or not."""
    wanted = [
        "/run/systemd/private",
        "/run/dbus/system_bus_socket",
        "/var/run/dbus/system_bus_socket",
        "/run/systemd/userdb/io.systemd.DynamicUser",
        "/run/systemd/io.system.ManagedOOM",
        "/run/systemd/notify",
        *extra,
    ]
    paths = dict.fromkeys([*wanted, *socket_files()])
    out = {}
    for p in paths:
        if p.startswith("/dev/log") or "/journal/" in p:
            continue  # logging sockets: writing a log line is not an escape
        out[p] = attempt(lambda p=p: _connect(p))
    return out


def start_unit_through_manager(marker: str) -> str:
    """Finding 1: ask the manager over its private socket (or the system bus) for a unit of
    our own whose ExecStart= creates ``marker`` on the host. ``"ok"`` if the call went through."""
    from sandboxed.systemd.bus import ManagerClient

    errors = []
    for address in ("unix:path=/run/systemd/private", "unix:path=/run/dbus/system_bus_socket"):
        try:
            c = ManagerClient(address)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{address}: {type(e).__name__} {e}")
            continue
        try:
            name = f"escape-{os.getpid()}-{abs(hash(marker)) % 10**6}.service"
            c.start_transient_unit(
                name,
                [
                    ("ExecStart", "a(sasb)", [("/bin/touch", ["/bin/touch", marker], False)]),
                    ("Type", "s", "oneshot"),
                    ("CollectMode", "s", "inactive-or-failed"),
                ],
                wait=True,
            )
            return OK
        except Exception as e:  # noqa: BLE001
            errors.append(f"{address}: {type(e).__name__} {e}")
        finally:
            c.close()
    return "; ".join(errors)


def read_other_units_environment(unit: str) -> str:
    """Finding 9: GetAll on another unit's Service interface; its Environment= if readable."""
    from sandboxed.systemd.bus import ManagerClient

    errors = []
    for address in ("unix:path=/run/dbus/system_bus_socket", "unix:path=/run/systemd/private"):
        try:
            c = ManagerClient(address)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}")
            continue
        try:
            props = c.get_unit_properties(unit, "org.freedesktop.systemd1.Service")
            return repr(props.get("Environment"))
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__} {e}")
        finally:
            c.close()
    return "refused: " + "; ".join(errors)


# -- other processes ------------------------------------------------------------------------


def own_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith("0::") or ":name=systemd:" in line:
            return line.split(":", 2)[2]
    return lines[0].split(":", 2)[2]


def outside_pids() -> list[int]:
    """PIDs visible in /proc that belong to another unit (or to no unit)."""
    mine = own_cgroup()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cgroup") as f:
                text = f.read()
        except OSError:
            pids.append(int(name))  # cannot even read it: count as outside
            continue
        if mine not in text:
            pids.append(int(name))
    return pids


def _ptrace_attach(pid: int) -> None:
    # PTRACE_SEIZE does not stop the tracee, and the forked tracer's exit detaches it:
    # a control run never leaves a process stopped.
    out = _in_child(lambda: syscall("ptrace", 0x4206, pid, 0, 0))
    if out != OK:
        raise PermissionError(out)


def _vm_read(pid: int) -> None:
    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    buf = ctypes.create_string_buffer(8)
    local = Iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = Iovec(0x400000, 8)
    try:
        syscall("process_vm_readv", pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    except OSError as e:
        if e.errno != errno.EFAULT:  # EFAULT: allowed, the address was just not mapped
            raise


def _pidfd_getfd(pid: int) -> None:
    fd = syscall("pidfd_open", pid, 0)
    try:
        got = syscall("pidfd_getfd", fd, 0, 0)
        os.close(got)
    finally:
        os.close(fd)


def _proc_mem(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
    os.close(fd)


def _proc_root_list(pid: int) -> None:
    os.listdir(f"/proc/{pid}/root/")


def _proc_environ(pid: int) -> None:
    with open(f"/proc/{pid}/environ", "rb") as f:
        f.read(1)


def _signal0(pid: int) -> None:
    os.kill(pid, 0)


def _pidfd_signal0(pid: int) -> None:
    fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    try:
        syscall("pidfd_send_signal", fd, 0, 0, 0)
    finally:
        os.close(fd)


PROCESS_WAYS = {
    "proc-root": _proc_root_list,
    "proc-mem": _proc_mem,
    "proc-environ": _proc_environ,
    "ptrace-attach": _ptrace_attach,
    "process_vm_readv": _vm_read,
    "pidfd_getfd": _pidfd_getfd,
}


def other_processes(targets: list[int] | None = None) -> dict[str, str]:
    """Each way to reach another process, tried on PID 1 and on ``targets`` (other units'
    processes the test names, in this sandbox's PID namespace), plus every other
    process visible in /proc. ``"ok"`` when any target was reachable that way."""
    pids = [1, *(targets or [])]
    others = [p for p in outside_pids() if p not in pids]
    out: dict[str, str] = {}
    for way, fn in PROCESS_WAYS.items():
        result = "no target"
        for pid in [*pids, *others[:40]]:
            r = attempt(lambda fn=fn, pid=pid: fn(pid))
            if r == OK:
                result = f"{OK}"
                break
            result = r
        out[way] = result
    return out


def signals() -> dict[str, str]:
    """Signal 0 (a permission probe that delivers nothing) to PID 1, the manager (which
    powers off on SIGRTMIN+4), to every process at once and to PID 1's process group."""
    return {
        "kill(1)": attempt(lambda: _signal0(1)),
        "kill(-1)": attempt(lambda: os.kill(-1, 0)),
        "killpg(1)": attempt(lambda: os.kill(-1 * os.getpgid(1) if os.getpgid(1) > 1 else -1, 0)),
        "tkill(1)": attempt(lambda: syscall("tkill", 1, 0)),
        "tgkill(1)": attempt(lambda: syscall("tgkill", 1, 1, 0)),
        "rt_sigqueueinfo(1)": attempt(
            lambda: syscall("rt_sigqueueinfo", 1, 0, ctypes.byref((ctypes.c_int * 32)(0, 0, -1)))
        ),
        "pidfd_send_signal(/proc/1)": attempt(lambda: _pidfd_signal0(1)),
    }


def signal_pids(pids: list[int]) -> dict[int, str]:
    """Signal 0 to each of ``pids`` by number."""
    return {pid: attempt(lambda pid=pid: _signal0(pid)) for pid in pids}


def write_through_proc_root(path: str) -> str:
    """Finding 2: create ``path`` (a host path) through /proc/1/root."""
    return attempt(lambda: open(f"/proc/1/root{path}", "w").close())


# -- namespaces -----------------------------------------------------------------------------


def _setns(kind: str) -> None:
    fd = os.open(f"/proc/1/ns/{kind}", os.O_RDONLY)
    try:
        syscall("setns", fd, 0)
    finally:
        os.close(fd)


def _unshare_in_child(flags: int) -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, attempt(lambda: syscall("unshare", flags)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def _setns_in_child(kind: str) -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, attempt(lambda: _setns(kind)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def namespaces() -> dict[str, str]:
    out = {
        f"setns-{k}": _setns_in_child(k)
        for k in ("net", "mnt", "pid", "ipc", "uts", "cgroup", "user")
    }
    for name, flag in (
        ("user", CLONE_NEWUSER),
        ("mnt", CLONE_NEWNS),
        ("net", CLONE_NEWNET),
        ("pid", CLONE_NEWPID),
        ("ipc", CLONE_NEWIPC),
        ("uts", CLONE_NEWUTS),
        ("cgroup", CLONE_NEWCGROUP),
        ("user+net", CLONE_NEWUSER | CLONE_NEWNET),
    ):
        out[f"unshare-{name}"] = _unshare_in_child(flag)
    return out


# -- mounts ---------------------------------------------------------------------------------


def _in_child(action: Any) -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, attempt(action).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def _umount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(path.encode(), MNT_DETACH) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _mount(src: str, target: str, fstype: str | None, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if (
        libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            None,
        )
        != 0
    ):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def mounts() -> dict[str, str]:
    """Undo or add mounts. Each runs in a forked child, which exits right after."""
    return {
        "umount-proc": _in_child(lambda: _umount("/proc")),
        "umount-run": _in_child(lambda: _umount("/run")),
        "mount-tmpfs": _in_child(
            lambda: _mount("tmpfs", "/mnt" if os.path.isdir("/mnt") else "/tmp", "tmpfs", 0)
        ),
        "mount-proc": _in_child(lambda: _mount("proc", "/tmp", "proc", 0)),
        "fsopen": _in_child(lambda: os.close(syscall("fsopen", ctypes.c_char_p(b"tmpfs"), 0))),
        "open_tree": _in_child(
            lambda: os.close(syscall("open_tree", -100, ctypes.c_char_p(b"/"), 1))
        ),
    }


# -- cgroups --------------------------------------------------------------------------------


def _cgroup_dirs() -> list[str]:
    """Every cgroup directory of this process, in every mounted hierarchy."""
    dirs = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype = fields[sep + 1]
            if fstype in ("cgroup", "cgroup2"):
                dirs.append(fields[4])
    return dirs


def cgroups() -> dict[str, str]:
    """Move into another cgroup (a parent: the root of each hierarchy) or make a new one."""
    out = {}
    me = str(os.getpid())
    for mnt in _cgroup_dirs():

        def move(mnt: str = mnt) -> None:
            with open(os.path.join(mnt, "cgroup.procs"), "w") as f:
                f.write(me)

        def mkdir(mnt: str = mnt) -> None:
            d = os.path.join(mnt, f"escape-{me}")
            os.mkdir(d)
            os.rmdir(d)

        # In a child: if the move works, only the child left.
        out[f"move-to-{mnt}"] = _in_child(move)
        out[f"mkdir-in-{mnt}"] = attempt(mkdir)
    return out


# -- kernel interfaces ------------------------------------------------------------------------


def kernel_interfaces() -> dict[str, str]:
    """Each interface with arguments that make it fail harmlessly after the permission check."""
    params = (ctypes.c_uint32 * 30)()

    def io_uring() -> None:
        fd = syscall("io_uring_setup", 4, ctypes.byref(params))
        os.close(fd)

    def bpf() -> None:
        # BPF_MAP_CREATE with a zeroed attribute: EINVAL once allowed.
        attr = (ctypes.c_uint8 * 128)()
        _fails_only_after_the_check("bpf", 0, ctypes.byref(attr), 128)

    def perf() -> None:
        attr = (ctypes.c_uint8 * 128)()
        _fails_only_after_the_check("perf_event_open", ctypes.byref(attr), 0, -1, -1, 0)

    def userfaultfd() -> None:
        os.close(syscall("userfaultfd", 0))

    def keyctl() -> None:
        syscall("keyctl", 1, ctypes.c_char_p(b"escape"))  # KEYCTL_JOIN_SESSION_KEYRING

    def add_key() -> None:
        syscall(
            "add_key",
            ctypes.c_char_p(b"user"),
            ctypes.c_char_p(b"escape"),
            ctypes.c_char_p(b"x"),
            1,
            -3,
        )

    return {
        "io_uring_setup": attempt(io_uring),
        "io_uring_enter": attempt(
            lambda: _fails_only_after_the_check("io_uring_enter", -1, 0, 0, 0, 0, 0)
        ),
        "io_uring_register": attempt(
            lambda: _fails_only_after_the_check("io_uring_register", -1, 0, 0, 0)
        ),
        "bpf": attempt(bpf),
        "perf_event_open": attempt(perf),
        "userfaultfd": attempt(userfaultfd),
        "keyctl": attempt(keyctl),
        "add_key": attempt(add_key),
        # Bad magic: EPERM without CAP_SYS_BOOT, EINVAL with it. Never a real reboot.
        "reboot": attempt(lambda: _fails_only_after_the_check("reboot", 0, 0, 0, 0)),
        "kexec_load": attempt(lambda: _fails_only_after_the_check("kexec_load", 0, 1 << 20, 0, 0)),
        "kexec_file_load": attempt(
            lambda: _fails_only_after_the_check("kexec_file_load", -1, -1, 0, 0, 0)
        ),
        "init_module": attempt(
            lambda: _fails_only_after_the_check("init_module", 0, 0, ctypes.c_char_p(b""))
        ),
        "finit_module": attempt(
            lambda: _fails_only_after_the_check("finit_module", -1, ctypes.c_char_p(b""), 0)
        ),
        "delete_module": attempt(
            lambda: _fails_only_after_the_check(
                "delete_module", ctypes.c_char_p(b"sandboxed-no-such-module"), 0
            )
        ),
        "iopl": attempt(lambda: _fails_only_after_the_check("iopl", 4))
        if os.uname().machine == "x86_64"
        else "n/a",
        "swapoff": attempt(
            lambda: _fails_only_after_the_check("swapoff", ctypes.c_char_p(b"/nonexistent"))
        ),
        "acct": attempt(
            lambda: _fails_only_after_the_check("acct", ctypes.c_char_p(b"/nonexistent/x"))
        ),
        "open_by_handle_at": attempt(
            lambda: _fails_only_after_the_check("open_by_handle_at", -1, 0, 0)
        ),
        "syslog-read": attempt(lambda: _fails_only_after_the_check("syslog", 10, 0, 0)),
        "settimeofday": attempt(lambda: _fails_only_after_the_check("settimeofday", 0, 0)),
    }


def _io_uring_socket(domain: int, kind: int) -> None:
    """Create a socket with IORING_OP_SOCKET (what finding 5 did to pass the socket filter)."""
    import mmap
    import struct

    params = bytearray(120)
    buf = (ctypes.c_char * 120).from_buffer(params)
    fd = syscall("io_uring_setup", 4, ctypes.byref(buf))
    try:
        u32 = lambda off: struct.unpack_from("=I", params, off)[0]  # noqa: E731
        sq_entries, cq_entries = u32(0), u32(4)
        sq_array, cqes = u32(64), u32(100)
        size = max(sq_array + sq_entries * 4, cqes + cq_entries * 16)
        ring = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        sqes = mmap.mmap(
            fd,
            64 * sq_entries,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
            offset=0x10000000,
        )
        sqe = bytearray(64)
        struct.pack_into("=BBHi", sqe, 0, 45, 0, 0, domain)  # IORING_OP_SOCKET, fd = domain
        struct.pack_into("=Q", sqe, 8, kind)  # off = type
        struct.pack_into("=I", sqe, 24, 0)  # len = protocol
        struct.pack_into("=Q", sqe, 32, 7)  # user_data
        sqes[0:64] = bytes(sqe)
        tail = struct.unpack_from("=I", ring, u32(44))[0]
        mask = struct.unpack_from("=I", ring, u32(48))[0]
        struct.pack_into("=I", ring, sq_array + 4 * (tail & mask), 0)
        struct.pack_into("=I", ring, u32(44), tail + 1)
        syscall("io_uring_enter", fd, 1, 1, 1, 0, 0)
        head = struct.unpack_from("=I", ring, u32(80))[0]
        cmask = struct.unpack_from("=I", ring, u32(88))[0]
        _, res, _ = struct.unpack_from("=QiI", ring, cqes + 16 * (head & cmask))
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        os.close(res)
        ring.close()
        sqes.close()
    finally:
        os.close(fd)


def io_uring_sockets() -> dict[str, str]:
    """IORING_OP_SOCKET for the families NoNetwork's RestrictAddressFamilies= forbids."""
    return {
        name: attempt(lambda d=d, t=t: _io_uring_socket(d, t))
        for name, d, t in (
            ("AF_INET", socket.AF_INET, socket.SOCK_STREAM),
            ("AF_INET6", socket.AF_INET6, socket.SOCK_STREAM),
            ("AF_NETLINK", socket.AF_NETLINK, socket.SOCK_RAW),
            ("AF_PACKET", 17, socket.SOCK_RAW),
            ("AF_VSOCK", AF_VSOCK, socket.SOCK_STREAM),
        )
    }


#: Files through which root makes the host's kernel run a program of its choosing or
#: change its behaviour for everyone. Opened for writing only (never written).
KERNEL_TUNABLES = (
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sysrq-trigger",
    "/sys/kernel/uevent_helper",
    "/proc/sys/vm/drop_caches",
    "/sys/fs/cgroup/cgroup.procs",
)


def kernel_tunables() -> dict[str, str]:
    def open_for_writing(path: str) -> None:
        os.close(os.open(path, os.O_WRONLY))

    return {p: attempt(lambda p=p: open_for_writing(p)) for p in KERNEL_TUNABLES}


def vsock() -> dict[str, str]:
    def bind() -> None:
        s = socket.socket(AF_VSOCK, socket.SOCK_STREAM)
        try:
            s.bind((VMADDR_CID_ANY, 0xFFFFFFFF))
        finally:
            s.close()

    def create() -> None:
        socket.socket(AF_VSOCK, socket.SOCK_STREAM).close()

    return {"vsock-socket": attempt(create), "vsock-bind": attempt(bind)}


# -- persistence ------------------------------------------------------------------------------

SHARED_PLACES = (
    "/run",
    "/run/lock",
    "/run/user",
    "/dev/shm",
    "/dev/mqueue",
    "/var/tmp",
    "/tmp",
    "/var/lib",
    "/var/cache",
    "/home",
    "/root",
)


def leave_markers(tag: str) -> dict[str, str]:
    """Create ``<place>/sandboxed-persist-<tag>`` in each shared writable place."""
    out = {}
    for place in SHARED_PLACES:
        p = os.path.join(place, f"sandboxed-persist-{tag}")
        out[place] = attempt(lambda p=p: open(p, "w").close())
    return out


def find_markers(tag: str) -> dict[str, str]:
    """``"ok"`` for each place where a marker left by an earlier unit is visible."""
    out = {}
    for place in SHARED_PLACES:
        p = os.path.join(place, f"sandboxed-persist-{tag}")
        out[place] = OK if os.path.exists(p) else "absent"
    return out


def remove_markers(tag: str) -> None:
    for place in SHARED_PLACES:
        p = os.path.join(place, f"sandboxed-persist-{tag}")
        with contextlib.suppress(OSError):
            os.unlink(p)


def identity() -> dict[str, Any]:
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {
        "uid": os.getuid(),
        "CapBnd": status.get("CapBnd"),
        "CapEff": status.get("CapEff"),
        "NoNewPrivs": status.get("NoNewPrivs"),
        "Seccomp": status.get("Seccomp"),
        "netns": os.readlink("/proc/self/ns/net"),
        "pid1_netns": attempt(lambda: os.readlink("/proc/1/ns/net")),
        "userns": os.readlink("/proc/self/ns/user"),
    }


def has_own_mount_namespace() -> bool:
    """Whether this process's mount namespace differs from PID 1's (False if unknown)."""
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt")
    except OSError:
        return True  # PID 1 hidden or unreadable: not the manager's namespace to break


def everything(targets: list[int] | None = None) -> dict[str, dict[str, str]]:
    out = {
        "sockets": privileged_sockets(),
        "processes": other_processes(targets),
        "namespaces": namespaces(),
        "cgroups": cgroups(),
        "kernel": kernel_interfaces(),
        "vsock": vsock(),
    }
    # Unmounting in the manager's own namespace would break the manager (seen).
    out["mounts"] = mounts() if has_own_mount_namespace() else {"skipped": "manager's namespace"}
    return out
