"""Boot the distribution's systemd as PID 1 of new namespaces (run as ``python -m``).

This module is the keeper process of an embedded manager. It is started by
:mod:`sandboxed.embedded` in a new session and:

1. unshares a PID namespace and forks the future PID 1;
2. the child moves itself into the cgroups prepared for it, unshares cgroup,
   mount and UTS namespaces, makes every mount private (so nothing it mounts
   or unmounts reaches the host), mounts a fresh /proc, a read-only /sys and
   /proc/sys, fresh cgroup file systems rooted at its own cgroups, and a
   private /run that is a directory of the host (so the manager's sockets are
   reachable from the host's namespaces), makes /etc/systemd read-only (what the
   manager would write there would configure the host's systemd), then drops
   CAP_SYS_MODULE and execs
   systemd with a unit search path that holds only our own units (and the
   directories under its private /run where systemd keeps its transient units);
3. the keeper stays in the host's PID namespace, reaps PID 1 when it exits and
   removes the cgroups it was given.

It takes one JSON argument (see ``embedded._boot_config``) and must not
import anything heavy: it runs before the manager exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
import threading
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_CAPBSET_DROP = 24
LOG_LIMIT = 16 << 20
CAP_SYS_MODULE = 16

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target} ({fstype or 'bind'})",
    )


def bind_readonly(path: str, recursive: bool = False) -> None:
    mount(path, path, None, MS_BIND | (MS_REC if recursive else 0))
    mount(path, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _log(msg: str) -> None:
    sys.stderr.write(f"sandboxed-boot[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()


def _pid1(cfg: dict[str, object]) -> None:
    """In the new PID namespace: set up the mounts and exec systemd."""
    for procs in cfg["cgroup_procs"]:  # type: ignore[attr-defined]
        with open(str(procs), "w") as f:
            f.write("0")
    unshare(CLONE_NEWCGROUP | CLONE_NEWNS | CLONE_NEWUTS)
    # First of all: nothing mounted or unmounted from here on may propagate to the host.
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # The manager must not change host sysctls nor write to the host's /sys.
    bind_readonly("/proc/sys", recursive=True)
    if os.path.exists("/proc/sysrq-trigger"):
        bind_readonly("/proc/sysrq-trigger")
    bind_readonly("/sys", recursive=True)
    mount("tmpfs", "/sys/fs/cgroup", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    for mnt in cfg["cgroup_mounts"]:  # type: ignore[attr-defined]
        target = "/sys/fs/cgroup/" + mnt["name"] if mnt["name"] else "/sys/fs/cgroup"
        if mnt["name"]:
            os.makedirs(target, exist_ok=True)
        if mnt["type"] == "cgroup2":
            mount(
                "cgroup2",
                target,
                "cgroup2",
                MS_NOSUID | MS_NODEV | MS_NOEXEC,
                mnt["options"] or None,
            )
        else:
            mount("cgroup", target, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, mnt["options"])
    for link, dest in cfg["cgroup_links"]:  # type: ignore[attr-defined]
        os.symlink(dest, "/sys/fs/cgroup/" + link)
    # The manager logs to /dev/console, which must be a terminal: give it a pty
    # of ours (read into its log file by the keeper), never the host's console.
    if os.path.exists("/dev/console"):
        mount(str(cfg["console"]), "/dev/console", None, MS_BIND)
    mount(str(cfg["run_dir"]), "/run", None, MS_BIND)
    os.makedirs("/run/lock", exist_ok=True)
    # The manager shares the host's /etc: whatever it would write there (a
    # `systemctl set-property` without --runtime, enable, edit, link, a first-boot
    # preset) would change the host's own systemd configuration. Read-only here, so
    # such a request fails (EROFS) instead; its private /run takes the runtime forms.
    if os.path.isdir("/etc/systemd"):
        bind_readonly("/etc/systemd", recursive=True)
    _libc.sethostname(b"sandboxed", 9)
    _check(_libc.prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE, 0, 0, 0), "prctl(PR_CAPBSET_DROP)")
    env = {
        "container": "sandboxed",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        # Only our own units exist for this manager: no tmpfiles, no gettys, no
        # host services, whatever the host has installed.
        "SYSTEMD_UNIT_PATH": str(cfg["unit_path"]),
        "SYSTEMD_GENERATOR_PATH": str(cfg["empty_dir"]),
        "SYSTEMD_ENVIRONMENT_GENERATOR_PATH": str(cfg["empty_dir"]),
    }
    systemd = str(cfg["systemd"])
    os.chdir("/")
    os.execve(
        systemd,
        [
            systemd,
            "--system",
            "--unit=sandboxed-embedded.target",
            "--log-target=console",
            "--log-level=" + str(cfg.get("log_level", "info")),
            "--show-status=no",
            "--default-standard-output=null",
            "--default-standard-error=null",
        ],
        env,
    )


def remove_cgroup_dirs(dirs: list[str], timeout: float = 10.0) -> list[str]:
    """rmdir every cgroup below and including ``dirs``; return the ones that remain.

    Shared with :mod:`sandboxed.embedded` (this module must stay free of imports
    beyond the standard library: it runs before the manager exists).
    """
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for top in dirs:
            if not os.path.isdir(top):
                continue
            for d, _sub, _files in os.walk(top, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            if os.path.isdir(top):
                left.append(top)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _pump(master: int, log: str, console: str) -> None:
    """Copy the manager's console into its log, whatever happens.

    This must never stop: the manager blocks on a full console. systemd hangs the
    console up (vhangup) when it resets it, after which reads fail with EIO until
    a slave is open again, so reopen one and go on. Past ``LOG_LIMIT`` bytes the
    output is read and dropped.
    """
    import errno

    written = 0
    out = None
    with contextlib.suppress(OSError):
        out = open(log, "ab", buffering=0)  # noqa: SIM115
    hold = -1
    while True:
        try:
            data = os.read(master, 65536)
        except OSError as e:
            if e.errno != errno.EIO:
                time.sleep(0.1)
                continue
            with contextlib.suppress(OSError):
                if hold >= 0:
                    os.close(hold)
                hold = os.open(console, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            time.sleep(0.05)
            continue
        if out is not None and written < LOG_LIMIT:
            with contextlib.suppress(OSError):
                written += out.write(data.replace(b"\r\n", b"\n")) or 0


def main() -> None:
    cfg = json.loads(sys.argv[1])
    master, slave = os.openpty()
    cfg["console"] = os.ttyname(slave)
    # Threads cannot be created once the PID namespace is unshared.
    threading.Thread(
        target=_pump, args=(master, str(cfg["log"]), cfg["console"]), daemon=True
    ).start()
    unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(master)
            os.close(int(cfg["commit_fd"]))
            os.dup2(slave, 1)
            os.dup2(slave, 2)
            # Keep our end of the slave open: with no slave fd open (systemd reopens its
            # console now and then) reads on the master fail and the log would stop.
            _pid1(cfg)
        except BaseException as e:
            _log(f"cannot boot the manager: {e}")
            os._exit(70)
    # The keeper: a parent for PID 1 in the host's namespaces, so its exit is
    # reaped and its cgroups removed even if nobody calls stop().
    os.close(slave)
    with open(str(cfg["pid_file"]) + ".tmp", "w") as f:
        f.write(f"{pid} {os.getpid()}\n")
    os.replace(str(cfg["pid_file"]) + ".tmp", str(cfg["pid_file"]))

    def forward(signum: int, _frame: object) -> None:
        os.kill(pid, signal.SIGRTMIN + 4 if signum == signal.SIGTERM else signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    committed, status = _await_commit(int(cfg["commit_fd"]), pid)
    if not committed:
        # The process that started us went away (or gave up) before the manager
        # was ready: nobody knows of this manager, so it must not outlive its start.
        _log("the starting process went away before the manager was ready: killing it")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: takes everything in it
    while status is None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = 0
        except InterruptedError:
            continue
    _log(f"manager exited with status {status:#x}")
    remove_cgroup_dirs(list(cfg["cgroup_dirs"]))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(str(cfg["pid_file"]))
    if not committed:
        _forget_state(str(cfg["state_file"]), str(cfg["instance"]))


def _await_commit(fd: int, pid: int) -> tuple[bool, int | None]:
    """Wait for the starter's word that the manager is known: (committed, wait status).

    The starter holds the other end of the pipe ``fd`` and writes one byte once it
    has recorded the running manager; end of file before that byte means it died
    or gave up. The wait status is set when PID 1 exited meanwhile (reaped here).
    """
    import select

    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True, 0
        if done:
            return True, status
        try:
            ready, _, _ = select.select([fd], [], [], 0.1)
        except InterruptedError:
            continue
        if ready:
            data = os.read(fd, 1)
            os.close(fd)
            return data == b"1", None


def _forget_state(path: str, instance: str) -> None:
    """Remove the state file if it still describes this (never committed) manager."""
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return
    if st.get("instance") == instance:
        with contextlib.suppress(OSError):
            os.unlink(path)


if __name__ == "__main__":
    main()
