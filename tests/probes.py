"""Probes that run *inside* a sandbox and report what they see, as plain data.

They are ordinary module-level functions, so they travel to the worker by
reference (this module must stay importable by the sandbox's user: it lives
in the world-readable checkout). Tests wrap them with ``sandboxed(...)(probe)``.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import time
from typing import Any


def status_fields(*names: str) -> dict[str, str]:
    """Fields of /proc/self/status (``NoNewPrivs``, ``CapBnd``, ``Seccomp``...)."""
    out: dict[str, str] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in names:
                out[key] = value.strip()
    return out


def identity() -> dict[str, Any]:
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cgroup": open("/proc/self/cgroup").read(),
        "parent_cmdline": open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\0"),
    }


def getpriority_errno() -> int:
    """0 when getpriority(2) works, else its errno (a filtered syscall fails)."""
    try:
        os.getpriority(os.PRIO_PROCESS, 0)
    except OSError as e:
        return e.errno or -1
    return 0


def nofile_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def environment() -> dict[str, str]:
    return dict(os.environ)


def cwd() -> str:
    return os.getcwd()


def umask_and_created_mode(directory: str) -> tuple[int, int]:
    """The process umask, and the mode of a file created with 0666 in ``directory``."""
    current = os.umask(0)
    os.umask(current)
    path = os.path.join(directory, f"sbx-umask-{os.getpid()}-{time.monotonic_ns()}")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o666)
    try:
        return current, os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        os.unlink(path)


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def write_errno(path: str) -> int:
    """0 when ``path`` can be created for writing, else the errno."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as e:
        return e.errno or -1
    os.close(fd)
    os.unlink(path)
    return 0


def open_for_append_errno(path: str) -> int:
    """0 when an existing file can be opened for writing (nothing is written), else the errno."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        return e.errno or -1
    os.close(fd)
    return 0


def exists(path: str) -> bool:
    return os.path.exists(path)


def write_then_read_tmp(name: str, text: str) -> str:
    path = os.path.join("/tmp", name)
    with open(path, "w") as f:
        f.write(text)
    with open(path) as f:
        return f.read()


def read_file(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def cpu_share(seconds: float) -> float:
    """Spin for ``seconds`` of wall time; return the CPU time this process got divided by it."""
    c0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        pass
    return (time.process_time() - c0) / (time.monotonic() - t0)


def allocate(megabytes: int) -> int:
    """Allocate and touch ``megabytes`` of memory."""
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def open_fds() -> dict[int, str]:
    """Every fd of this process and what it points to (the listing's own fd excluded)."""
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = os.listdir(listing)
    finally:
        os.close(listing)
    out: dict[int, str] = {}
    for name in names:
        fd = int(name)
        if fd == listing:
            continue
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return out


def pipes_created_here() -> set[str]:
    """The ``pipe:[inode]`` names of pipes this worker made (its stdout/stderr capture)."""
    fds = open_fds()
    return {target for fd, target in fds.items() if fd in (1, 2) and target.startswith("pipe:")}


def sleep_then_write(seconds: float, path: str) -> str:
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("written")
    return path


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def own_cgroup_limits() -> dict[str, int | None]:
    """The memory, task and CPU limits the kernel enforces on this process's cgroups.

    Read from inside: ``memory`` in bytes, ``pids`` as a count, ``cpu`` as
    microseconds of CPU per second of wall time; None where unlimited (or where
    this process's cgroup has no such controller).
    """
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _num, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path

    def read(*parts: str) -> str | None:
        try:
            with open(os.path.join("/sys/fs/cgroup", *parts)) as f:
                return f.read().strip()
        except OSError:
            return None

    def number(text: str | None, unlimited: int | None = None) -> int | None:
        if text is None or text == "max":
            return None
        value = int(text)
        return None if unlimited is not None and value >= unlimited else value

    out: dict[str, int | None] = {"memory": None, "pids": None, "cpu": None}
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # unified
        rel = own.get("", "/").lstrip("/")
        out["memory"] = number(read(rel, "memory.max"))
        out["pids"] = number(read(rel, "pids.max"))
        cpu = read(rel, "cpu.max")
        if cpu is not None and not cpu.startswith("max"):
            quota, period = (int(x) for x in cpu.split())
            out["cpu"] = quota * 1_000_000 // period
        return out
    if "memory" in own:
        out["memory"] = number(
            read("memory", own["memory"].lstrip("/"), "memory.limit_in_bytes"), 1 << 62
        )
    if "pids" in own:
        out["pids"] = number(read("pids", own["pids"].lstrip("/"), "pids.max"))
    if "cpu" in own:
        rel = own["cpu"].lstrip("/")
        quota = number(read("cpu", rel, "cpu.cfs_quota_us"))
        period = number(read("cpu", rel, "cpu.cfs_period_us"))
        if quota is not None and quota >= 0 and period:
            out["cpu"] = quota * 1_000_000 // period
    return out


def fork_many(n: int) -> int:
    """Fork up to ``n`` children that wait together; return how many forks succeeded."""
    read_end, write_end = os.pipe()
    children = []
    try:
        for _ in range(n):
            try:
                pid = os.fork()
            except BlockingIOError:
                break
            if pid == 0:
                os.close(write_end)
                os.read(read_end, 1)
                os._exit(0)
            children.append(pid)
    finally:
        os.close(write_end)
        os.close(read_end)
        for pid in children:
            os.waitpid(pid, 0)
    return len(children)


def limits_and_forks_after(seconds: float, forks: int) -> tuple[dict[str, int | None], int]:
    """After ``seconds`` (time for the test to reload the manager meanwhile): this
    process's cgroup limits and how many of ``forks`` forks succeed."""
    time.sleep(seconds)
    return own_cgroup_limits(), fork_many(forks)


def allocate_after(seconds: float, megabytes: int) -> int:
    time.sleep(seconds)
    return allocate(megabytes)
