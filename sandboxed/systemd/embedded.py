"""An embedded systemd for hosts whose PID 1 is not systemd (containers, CI).

:func:`start` boots the distribution's ``systemd`` as PID 1 of new PID, mount,
cgroup and UTS namespaces (see :mod:`sandboxed.systemd.nsinit`) and exposes its private
socket and its D-Bus system bus socket under a host directory, so callers in
the host's namespaces connect to it directly. Start is idempotent and guarded
by a lock file: a second process reuses a running manager, and a stale one
(dead PID, leftover sockets or cgroups) is cleaned up and replaced. Start is
atomic for every other process: its state is written before anything can be
orphaned, and a manager whose starter dies before it is ready dies with it.
:func:`stop` powers it off and removes the cgroups it was given; it refuses
while other processes run sandboxes in it unless forced, and records that the
manager was stopped on purpose, so that the callers that used it do not start
it again behind the stopper's back.

Host safety: the manager sees only the units shipped in ``sandboxed/units``
(its unit search path holds nothing else of the host), runs no generators, mounts and
unmounts only in its own mount namespace, sees /sys and /proc/sys read-only
and cannot load kernel modules.

Environment:
    ``SANDBOXED_EMBEDDED_DIR``  where its state and sockets live
                                 (default ``/run/sandboxed/embedded``).
    ``SANDBOXED_SYSTEMD``       the systemd binary (default: the distribution's).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from sandboxed._errors import EmbeddedManagerError, ManagerInUseError
from sandboxed.systemd.cgroups import CgroupMount, cgroup_mounts
from sandboxed.systemd.nsinit import remove_cgroup_dirs

DEFAULT_DIR = "/run/sandboxed/embedded"
SYSTEMD_CANDIDATES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
CHILD_CGROUP = "sandboxed-embedded"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# The manager's unit search path, all under its private /run: our units, and the
# directories systemd itself writes units to (transient units, runtime drop-ins of
# `set-property --runtime`, generators, of which it runs none). Without them a
# daemon-reload or daemon-reexec cannot read the transient units back and unloads
# every running sandbox, limits and all (systemd's lookup rules: path-lookup.c;
# SYSTEMD_UNIT_PATH replaces its whole list). Nothing of the host's /etc or /usr:
# no host service can be started here.
UNIT_PATH = (
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/run/sandboxed/units",
    "/run/systemd/generator",
    "/run/systemd/generator.late",
)
KEPT_STOPS = 32
# systemd 254 logs who asked for a Reload() or Reexecute() and, asking the bus for
# the caller's PID, aborts (PID 1, and with it every sandbox) when the bus says 0:
# what its dbus-daemon, inside the manager's PID namespace, reports for any caller
# in the host's namespaces (sd-bus takes the 0, then asserts ``pid > 0``). Measured
# on 254; 252 does not log the caller, 257 checks the PID. 255 and 256 are not
# measured and are treated as 254. The embedded bus of these versions refuses both
# calls (AccessDenied); systemctl in the manager's namespaces uses the private socket.
REFUSE_RELOAD_ON_BUS = range(254, 257)
DBUS_SYSTEM_CONFIGS = ("/usr/share/dbus-1/system.conf", "/etc/dbus-1/system.conf")
_REFUSE_RELOAD_POLICY = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- Written by sandboxed: systemd {version} aborts on a Reload() or Reexecute()
     from a caller whose PID its namespace cannot see. -->
<busconfig>
  <include>{system}</include>
  <policy context="mandatory">
    <deny send_destination="org.freedesktop.systemd1"
          send_interface="org.freedesktop.systemd1.Manager" send_member="Reload"/>
    <deny send_destination="org.freedesktop.systemd1"
          send_interface="org.freedesktop.systemd1.Manager" send_member="Reexecute"/>
  </policy>
</busconfig>
"""
_REFUSE_RELOAD_DROP_IN = """\
[Service]
ExecStart=
ExecStart=/usr/bin/dbus-daemon --config-file={config} --address=systemd: --nofork \
--nopidfile --systemd-activation --nosyslog
"""


def state_dir() -> Path:
    """The directory holding the embedded manager's state and sockets."""
    return Path(os.environ.get("SANDBOXED_EMBEDDED_DIR", DEFAULT_DIR))


@attrs.frozen
class EmbeddedManager:
    """A running embedded manager.

    ``address`` is the manager's private socket (peer-to-peer D-Bus);
    ``bus_address`` its system bus, for ``systemd-run``/``systemctl``
    (``DBUS_SYSTEM_BUS_ADDRESS``); ``pid`` the host PID of its PID 1;
    ``instance`` tells one boot from the next in the same directory.
    """

    directory: Path
    pid: int
    keeper_pid: int
    cgroup_dirs: tuple[str, ...]
    layout: str
    instance: str = ""

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def private_socket(self) -> Path:
        return self.run_dir / "systemd" / "private"

    @property
    def bus_socket(self) -> Path:
        return self.run_dir / "dbus" / "system_bus_socket"

    @property
    def address(self) -> str:
        # The manager's private socket refuses peers outside its PID namespace
        # (it cannot see their PID), so host callers go through its bus.
        return self.bus_address

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.bus_socket}"

    @property
    def tool_prefix(self) -> list[str]:
        """Prefix for running ``systemctl``/``systemd-run`` against this manager.

        systemd's tools refuse to talk to a manager unless /run/systemd/system
        exists, which must not be faked on the host, and the manager's private
        socket refuses peers it cannot see; so they run in the manager's mount
        namespace (where /run is its own) and PID namespace.
        """
        return [
            "nsenter",
            f"--mount=/proc/{self.pid}/ns/mnt",
            f"--pid=/proc/{self.pid}/ns/pid",
            "--",
        ]


def _own_cgroups() -> dict[str, str]:
    """Map of hierarchy key -> this process's cgroup path (key: controllers or "" for v2)."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _num, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    return own


def _host_path(m: CgroupMount, own: dict[str, str]) -> str:
    key = "" if m.type == "cgroup2" else ",".join(c for c in m.controllers if c not in ("xattr",))
    path = own.get(key)
    if path is None:
        # /proc/self/cgroup orders controllers its own way; match as sets.
        for k, v in own.items():
            if k and set(k.split(",")) == set(key.split(",")):
                path = v
                break
    if path is None:
        raise EmbeddedManagerError(f"cannot find this process's cgroup in {m.options or 'cgroup2'}")
    rel = path
    if m.root != "/" and rel.startswith(m.root):
        rel = rel[len(m.root) :]
    base = "/sys/fs/cgroup/" + m.name if m.name else "/sys/fs/cgroup"
    return os.path.normpath(base + "/" + rel.lstrip("/"))


def _prepare_cgroups(
    layout: str, mounts: list[CgroupMount], child: str
) -> tuple[list[str], list[str]]:
    """Create the manager's cgroup below ours in every hierarchy; return (dirs, procs files)."""
    own = _own_cgroups()
    dirs: list[str] = []
    for m in mounts:
        parent = _host_path(m, own)
        d = os.path.join(parent, child)
        if not os.access(parent, os.W_OK):
            raise EmbeddedManagerError(
                f"the cgroup file system is not writable at {parent}; the embedded manager "
                "needs root with write access to its own cgroup (in a container: run it "
                "privileged, or with a writable cgroup mount)"
            )
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        except OSError as e:
            raise EmbeddedManagerError(f"cannot create the cgroup {d}: {e}") from e
        if "cpuset" in m.controllers:
            for knob in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(parent, knob)) as src:
                    value = src.read().strip()
                with open(os.path.join(d, knob), "w") as dst:
                    dst.write(value)
        if layout == "unified":
            _enable_v2_controllers(parent, d)
        dirs.append(d)
    return dirs, [os.path.join(d, "cgroup.procs") for d in dirs]


def _enable_v2_controllers(parent: str, child: str) -> None:
    """Delegate the parent's controllers to our child (pure cgroup2 hosts)."""
    try:
        with open(os.path.join(parent, "cgroup.controllers")) as f:
            available = f.read().split()
    except OSError:
        return
    for c in available:
        with (
            contextlib.suppress(OSError),
            open(os.path.join(parent, "cgroup.subtree_control"), "w") as f,
        ):
            f.write(f"+{c}")


# -- state ------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _read_state(directory: Path) -> dict[str, object] | None:
    try:
        return json.loads((directory / "state.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _write_state(directory: Path, st: dict[str, object]) -> None:
    # Atomic: a reader sees the old state or the new one, never half of one.
    tmp = directory / f"state.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(st))
    os.replace(tmp, directory / "state.json")


def _keeper_state(directory: Path) -> dict[str, object] | None:
    """The state of a live manager of ``directory`` whose state file is missing.

    Found from what only a live manager has: its keeper process (whose command
    line holds its boot configuration) and that keeper's child, PID 1.
    """
    pid_file = str(directory / "pid")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) < 4 or argv[2] != b"sandboxed.systemd.nsinit":
            continue
        try:
            cfg = json.loads(argv[3])
        except ValueError:
            continue
        if cfg.get("pid_file") != pid_file:
            continue
        keeper = int(entry.name)
        return {
            "pid": _child_of(keeper),
            "keeper_pid": keeper,
            "cgroup_dirs": cfg.get("cgroup_dirs", []),
            "layout": cfg.get("layout", ""),
            "instance": cfg.get("instance", ""),
        }
    return None


def _child_of(parent: int) -> int:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == parent:
                    return int(entry.name)
    return 0


def _mark_stopped(directory: Path, instance: str) -> None:
    """Record that ``instance`` was stopped on purpose (the last few are kept)."""
    if not instance:
        return
    path = directory / "stopped"
    try:
        kept = path.read_text().split()
    except OSError:
        kept = []
    kept = [*kept[-(KEPT_STOPS - 1) :], instance]
    tmp = directory / f"stopped.{os.getpid()}.tmp"
    tmp.write_text("\n".join(kept) + "\n")
    os.replace(tmp, path)


def stopped_on_purpose(directory: Path, instance: str) -> bool:
    """True when the manager ``instance`` of ``directory`` was stopped by :func:`stop`."""
    try:
        return bool(instance) and instance in (directory / "stopped").read_text().split()
    except OSError:
        return False


def _manager_from_state(directory: Path, st: dict[str, object]) -> EmbeddedManager:
    return EmbeddedManager(
        directory=directory,
        pid=int(st["pid"]),  # type: ignore[call-overload]
        keeper_pid=int(st["keeper_pid"]),  # type: ignore[call-overload]
        cgroup_dirs=tuple(str(d) for d in st["cgroup_dirs"]),  # type: ignore[attr-defined]
        layout=str(st["layout"]),
        instance=str(st.get("instance", "")),
    )


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_running(m: EmbeddedManager) -> bool:
    from sandboxed.systemd.bus import is_socket_alive

    if not _pid_alive(m.pid):
        return False
    try:
        comm = Path(f"/proc/{m.pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == "systemd" and is_socket_alive(str(m.bus_socket))


def status(directory: Path | None = None) -> EmbeddedManager | None:
    """The running embedded manager of ``directory``, or None."""
    directory = directory or state_dir()
    st = _read_state(directory)
    if st is None or st.get("booting"):
        return None
    m = _manager_from_state(directory, st)
    return m if _is_running(m) else None


def _log_tail(directory: Path, lines: int = 30) -> str:
    try:
        text = (directory / "manager.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def find_systemd() -> str:
    explicit = os.environ.get("SANDBOXED_SYSTEMD")
    candidates = (explicit,) if explicit else SYSTEMD_CANDIDATES
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise EmbeddedManagerError(
        f"no systemd binary found (looked at {', '.join(c for c in candidates if c)}); "
        "install the distribution's systemd package (apt-get install systemd dbus) "
        "or set SANDBOXED_SYSTEMD"
    )


def _require_root(doing: str) -> None:
    uid = os.geteuid()
    if uid != 0:
        raise EmbeddedManagerError(
            f"{doing} the embedded manager needs root (it runs as root in namespaces and "
            f"cgroups of its own), and this is uid {uid}; run as root, or use your own user "
            "manager (sandboxed's default without root), or set SANDBOXED_MANAGER"
        )


def preflight() -> tuple[str, str, list[CgroupMount]]:
    """Check everything the embedded manager needs; return (systemd, layout, mounts)."""
    _require_root("starting")
    systemd = find_systemd()
    if not os.access("/usr/bin/dbus-daemon", os.X_OK):
        raise EmbeddedManagerError(
            "no /usr/bin/dbus-daemon; install the distribution's dbus package "
            "(apt-get install dbus)"
        )
    layout, mounts = cgroup_mounts()
    return systemd, layout, mounts


def _cleanup_stale(directory: Path, st: dict[str, object] | None) -> None:
    """Remove what a dead manager left: processes in its cgroups, the cgroups, its /run."""
    if st is not None:
        for key in ("keeper_pid", "pid"):
            pid = int(st.get(key, 0))  # type: ignore[call-overload]
            if pid > 1 and _pid_alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        dirs = [str(d) for d in st.get("cgroup_dirs", [])]  # type: ignore[attr-defined]
        _kill_cgroups(dirs)
        remove_cgroup_dirs(dirs)
    # Never remove the files of a manager that still lives (say, one whose state
    # file was lost): its keeper is found by its command line.
    live = _keeper_state(directory)
    if live is not None:
        raise EmbeddedManagerError(
            f"a manager of {directory} is still running (keeper pid {live['keeper_pid']}, "
            f"PID 1 {live['pid']}); its files are left alone: stop it with "
            "`sandboxed embedded stop`"
        )
    (directory / "state.json").unlink(missing_ok=True)
    (directory / "pid").unlink(missing_ok=True)
    _clear_run_dir(directory / "run")


def _kill_cgroups(dirs: list[str]) -> None:
    for _ in range(50):
        found = False
        for top in dirs:
            for d, _sub, files in os.walk(top):
                if "cgroup.procs" not in files:
                    continue
                with contextlib.suppress(OSError):
                    for pid in Path(d, "cgroup.procs").read_text().split():
                        found = True
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.05)


def _clear_run_dir(run: Path) -> None:
    # Only ever our own directory; a live manager's mounts live in its own mount
    # namespace, so nothing here crosses into another file system.
    if run.is_dir() and not os.path.ismount(run):
        shutil.rmtree(run, ignore_errors=True)


def systemd_version(systemd: str) -> int:
    """The version number of the systemd binary ``systemd`` (0 when it does not say)."""
    try:
        out = subprocess.run(
            [systemd, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    words = out.split()
    if len(words) >= 2 and words[0] == "systemd" and words[1].isdigit():
        return int(words[1])
    return 0


def _unit_dir(directory: Path, version: int = 0) -> Path:
    src = Path(__file__).resolve().parent.parent / "units"
    # Inside the manager's namespaces only its /run (our run dir) is visible at
    # the same place; the unit search path must live there.
    dst = directory / "run" / "sandboxed" / "units"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    system = next((c for c in DBUS_SYSTEM_CONFIGS if os.path.isfile(c)), None)
    config = dst.parent / "dbus-system.conf"
    config.unlink(missing_ok=True)
    if version in REFUSE_RELOAD_ON_BUS and system is not None:
        config.write_text(_REFUSE_RELOAD_POLICY.format(version=version, system=system))
        drop_in = dst / "dbus.service.d"
        drop_in.mkdir()
        (drop_in / "refuse-reload.conf").write_text(
            _REFUSE_RELOAD_DROP_IN.format(config="/run/sandboxed/dbus-system.conf")
        )
    return dst


def start(directory: Path | None = None, timeout: float = START_TIMEOUT) -> EmbeddedManager:
    """Start the embedded manager, or return the one already running.

    Raises :class:`EmbeddedManagerError` (not root, no systemd, unsupported or
    read-only cgroups, or the manager did not come up within ``timeout``, with
    the tail of its log).
    """
    directory = Path(directory or state_dir())
    # Not even a running one is handed out without root: it would refuse every unit.
    _require_root("starting")
    running = status(directory)
    if running is not None:
        return running
    systemd, layout, mounts = preflight()
    with _locked(directory):
        # Under the lock no start is half-way (its starter holds the lock until the
        # manager is ready): a booting state is a starter that died.
        st = _read_state(directory) or _keeper_state(directory)
        if st is not None and not st.get("booting"):
            m = _manager_from_state(directory, st)
            if _is_running(m):
                return m
        _cleanup_stale(directory, st)
        return _start_locked(directory, systemd, layout, mounts, timeout)


def _start_locked(
    directory: Path, systemd: str, layout: str, mounts: list[CgroupMount], timeout: float
) -> EmbeddedManager:
    instance = secrets.token_hex(8)
    cgroup_dirs, procs = _prepare_cgroups(layout, mounts, _child_cgroup(directory))
    st: dict[str, object] = {
        "instance": instance,
        "booting": True,
        "starter_pid": os.getpid(),
        "pid": 0,
        "keeper_pid": 0,
        "cgroup_dirs": cgroup_dirs,
        "layout": layout,
        "started": time.time(),
    }
    # Before anything exists that could be orphaned: whoever comes next knows where
    # to look (the cgroups) even if this process dies on the next line.
    _write_state(directory, st)
    run = directory / "run"
    run.mkdir(mode=0o755, exist_ok=True)
    _unit_dir(directory, systemd_version(systemd))
    empty = run / "sandboxed" / "empty"
    empty.mkdir(mode=0o755, parents=True, exist_ok=True)
    log = directory / "manager.log"
    log.write_bytes(b"")
    links = []
    for entry in os.scandir("/sys/fs/cgroup"):
        if entry.is_symlink():
            links.append((entry.name, os.readlink(entry.path)))
    cfg: dict[str, object] = {
        "systemd": systemd,
        "cgroup_procs": procs,
        "cgroup_dirs": cgroup_dirs,
        "cgroup_mounts": [attrs.asdict(m) for m in mounts],
        "cgroup_links": links if layout != "unified" else [],
        "run_dir": str(run),
        "unit_path": ":".join(UNIT_PATH),
        "empty_dir": "/run/sandboxed/empty",
        "log": str(log),
        "pid_file": str(directory / "pid"),
        "state_file": str(directory / "state.json"),
        "instance": instance,
        "layout": layout,
        "log_level": os.environ.get("SANDBOXED_EMBEDDED_LOG_LEVEL", "info"),
    }
    # The keeper kills the manager if this end closes before we write to it: the
    # start dies with its starter (this process exiting, or giving up).
    commit_r, commit_w = os.pipe()
    cfg["commit_fd"] = commit_r
    try:
        with open(log, "ab") as logf:
            keeper = subprocess.Popen(
                [sys.executable, "-m", "sandboxed.systemd.nsinit", json.dumps(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
                close_fds=True,
                pass_fds=(commit_r,),
                cwd="/",
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "PYTHONPATH": _package_root(),
                },
            )
    except BaseException:
        os.close(commit_w)
        raise
    finally:
        os.close(commit_r)
    try:
        return _await_boot(directory, keeper, st, commit_w, timeout)
    finally:
        os.close(commit_w)


def _await_boot(
    directory: Path,
    keeper: subprocess.Popen[bytes],
    st: dict[str, object],
    commit_w: int,
    timeout: float,
) -> EmbeddedManager:
    cgroup_dirs = [str(d) for d in st["cgroup_dirs"]]  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    pid = 0
    while time.monotonic() < deadline:
        if keeper.poll() is not None:
            break
        try:
            pid = int((directory / "pid").read_text().split()[0])
            break
        except (OSError, ValueError, IndexError):
            time.sleep(0.01)
    if not pid:
        _abort(keeper, cgroup_dirs)
        (directory / "state.json").unlink(missing_ok=True)
        raise EmbeddedManagerError(
            "the embedded manager did not start", log_tail=_log_tail(directory)
        )
    layout, instance = str(st["layout"]), str(st["instance"])
    m = EmbeddedManager(directory, pid, keeper.pid, tuple(cgroup_dirs), layout, instance)
    st.update(pid=pid, keeper_pid=keeper.pid)
    _write_state(directory, st)
    try:
        _wait_ready(m, keeper, deadline)
        os.write(commit_w, b"1")
        st["booting"] = False
        _write_state(directory, st)
    except BaseException:
        _abort(keeper, cgroup_dirs)
        with contextlib.suppress(EmbeddedManagerError):
            _cleanup_stale(directory, _read_state(directory))
        raise
    return m


def _child_cgroup(directory: Path) -> str:
    """The cgroup name of the manager of ``directory`` (two state dirs never share one)."""
    import hashlib

    if str(directory) == DEFAULT_DIR:
        return CHILD_CGROUP
    return f"{CHILD_CGROUP}-{hashlib.sha256(str(directory).encode()).hexdigest()[:10]}"


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _abort(keeper: subprocess.Popen[bytes], cgroup_dirs: list[str]) -> None:
    # Kill what runs in the manager's cgroups first and let the keeper reap its
    # PID 1: a keeper killed first would leave PID 1 to a host init that may
    # never reap it.
    _kill_cgroups(cgroup_dirs)
    try:
        keeper.wait(5)
    except subprocess.TimeoutExpired:
        keeper.kill()
        keeper.wait(5)
    remove_cgroup_dirs(cgroup_dirs)


def _wait_ready(m: EmbeddedManager, keeper: subprocess.Popen[bytes], deadline: float) -> None:
    from sandboxed.systemd.bus import ManagerClient, is_socket_alive

    while time.monotonic() < deadline:
        if keeper.poll() is not None or not _pid_alive(m.pid):
            raise EmbeddedManagerError(
                "the embedded manager exited while booting", log_tail=_log_tail(m.directory)
            )
        if is_socket_alive(str(m.private_socket)) and is_socket_alive(str(m.bus_socket)):
            try:
                client = ManagerClient(m.address)
            except Exception:
                time.sleep(0.02)
                continue
            try:
                state = client.get_property(
                    "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "SystemState"
                )
            finally:
                client.close()
            if state in ("running", "degraded"):
                return
        time.sleep(0.02)
    raise EmbeddedManagerError(
        f"the embedded manager did not come up within {START_TIMEOUT:g} s",
        log_tail=_log_tail(m.directory),
    )


def units_in_use(m: EmbeddedManager) -> list[tuple[str, str]]:
    """(name, description) of the running transient services of ``m``: the callers'
    sandboxes (a sandbox unit's description names its caller's pid)."""
    from sandboxed.systemd.bus import UNIT_IFACE, ManagerClient

    client = ManagerClient(m.address)
    try:
        out = []
        for row in client.list_units():
            name, description, _load, active = (str(x) for x in row[:4])
            if not name.endswith(".service") or active not in ("active", "activating", "reloading"):
                continue
            if client.get_property(str(row[6]), UNIT_IFACE, "Transient"):
                out.append((name, description))
        return out
    finally:
        client.close()


def _refuse_while_in_use(m: EmbeddedManager, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        busy = units_in_use(m)
        if not busy:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
    shown = "; ".join(f"{name} ({description})" for name, description in busy[:5])
    more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""
    waited = f" after waiting {wait:g} s" if wait else ""
    raise ManagerInUseError(
        f"the embedded manager at {m.directory} still runs {len(busy)} sandbox unit(s) of "
        f"other processes{waited}, so it was not stopped: {shown}{more}.\n"
        "Let them finish (`sandboxed embedded stop --wait SECONDS` waits for them), "
        "stop them (`sandboxed stop UNIT`), or stop the manager anyway "
        "(`sandboxed embedded stop --force`: their calls fail, and they do not start "
        "it again)",
        busy,
    )


def stop(
    directory: Path | None = None,
    timeout: float = STOP_TIMEOUT,
    *,
    force: bool = False,
    wait: float = 0.0,
) -> bool:
    """Power the embedded manager off and remove its cgroups and sockets.

    Returns True if a manager was running. While other processes run sandboxes in
    it (see :func:`units_in_use`, this process's own units count too) it waits up
    to ``wait`` seconds for them to finish, then raises :class:`ManagerInUseError`
    unless ``force``. A stopped manager is recorded as stopped on purpose: the
    processes that used it get :class:`ManagerNotFoundError` on their next start
    instead of booting it again (a new process may start one). Its units are
    stopped cleanly through shutdown.target; what remains after ``timeout`` is
    killed. A live manager's files are never removed, even without its state file.
    Raises :class:`EmbeddedManagerError` for a caller that is not root when there
    is a manager to stop (it belongs to root).
    """
    directory = Path(directory or state_dir())
    if not directory.exists():
        return False
    if os.geteuid() != 0:
        if _read_state(directory) is None:
            return False
        _require_root("stopping")
    with _locked(directory):
        st = _read_state(directory) or _keeper_state(directory)
        if st is None:
            _clear_run_dir(directory / "run")
            return False
        m = _manager_from_state(directory, st)
        was_running = _pid_alive(m.pid)
        if was_running and not force and _is_running(m):
            _refuse_while_in_use(m, wait)
        if was_running:
            # Before it goes: a caller that sees it gone must find why.
            _mark_stopped(directory, m.instance)
            with contextlib.suppress(OSError):
                os.kill(m.pid, signal.SIGRTMIN + 4)
            deadline = time.monotonic() + timeout
            while _pid_alive(m.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        keeper_deadline = time.monotonic() + 5
        while _pid_alive(m.keeper_pid) and time.monotonic() < keeper_deadline:
            time.sleep(0.02)
        _cleanup_stale(directory, st)
        left = remove_cgroup_dirs(list(m.cgroup_dirs), timeout=2)
        if left:
            raise EmbeddedManagerError(f"cgroups left behind after stop: {', '.join(left)}")
        return was_running
