"""ReadOnly (ProtectSystem=strict, ProtectHome=), ReadWritePaths= and InaccessiblePaths=
against code that wants to change or read what it must not.

The bait is a tree outside /tmp whose files and directories are world-writable
(mode 0666/0777), so that only the sandbox, never file permissions, can stop
a write. The attacks run as root (ReadOnly alone: the strongest attacker,
with every capability ReadOnly leaves it) and as ``nobody``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escape_kit import OK, attempt, in_sandbox

from sandboxed import AsUser, ReadOnly

pytestmark = pytest.mark.systemd

MS_REMOUNT, MS_BIND = 32, 4096
AT_FDCWD = -100


class Tree:
    """The bait tree on the host."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.file = root / "file.txt"  # 0666: writable by anyone but for the sandbox
        self.dir = root / "dir"  # 0777
        self.rw = root / "rw"  # ReadWritePaths=
        self.hidden = root / "hidden"  # InaccessiblePaths=
        self.home = home  # a 0777 directory in /home with a 0666 file
        self.home_file = home / "file.txt"

    def snapshot(self) -> list[tuple[str, int, bytes]]:
        """Every path outside rw/ with its mode and content: what no attack may change."""
        out = []
        for base in (self.root, self.home):
            for p in sorted(base.rglob("*")):
                if self.rw in p.parents:
                    continue
                st = p.lstat()
                data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
                out.append((str(p), st.st_mode, data))
        return out


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    root = Path(tempfile.mkdtemp(prefix="sandboxed-fs-", dir="/var/lib"))
    home = Path("/home") / f"sandboxed-escape-{secrets.token_hex(4)}"
    home.mkdir(mode=0o777)
    t = Tree(root, home)
    for d in (t.dir, t.rw, t.hidden):
        d.mkdir()
    for p in (root, t.dir, t.rw, t.home):
        p.chmod(0o777)
    root.chmod(0o755)
    t.hidden.chmod(0o755)
    for f in (t.file, t.home_file, t.rw / "inside.txt"):
        f.write_text("original\n")
        f.chmod(0o666)
    (t.hidden / "secret.txt").write_text("hidden secret\n")
    (t.hidden / "secret.txt").chmod(0o644)
    yield t
    shutil.rmtree(root)
    shutil.rmtree(home)


@pytest.fixture(scope="module")
def boxes(tree: Tree) -> dict[str, Any]:
    paths = {"ReadWritePaths": str(tree.rw), "InaccessiblePaths": str(tree.hidden)}
    return {
        "root": in_sandbox(ReadOnly, **paths),
        "nobody": in_sandbox(ReadOnly, AsUser("nobody"), **paths),
    }


def _libc_call(name: str, *args: Any) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    r = int(getattr(libc, name)(*args))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{name}: {os.strerror(e)}")
    return r


def _write_by_handle(target: str, through: str) -> None:
    """open_by_handle_at: reopen ``target`` through the (writable) mount of ``through``."""

    class Handle(ctypes.Structure):
        _fields_ = [
            ("handle_bytes", ctypes.c_uint),
            ("handle_type", ctypes.c_int),
            ("f_handle", ctypes.c_ubyte * 128),
        ]

    h, mount_id = Handle(handle_bytes=128), ctypes.c_int()
    _libc_call(
        "name_to_handle_at", AT_FDCWD, target.encode(), ctypes.byref(h), ctypes.byref(mount_id), 0
    )
    mfd = os.open(through, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _libc_call("open_by_handle_at", mfd, ctypes.byref(h), os.O_WRONLY)
    finally:
        os.close(mfd)
    try:
        os.write(fd, b"escaped by handle\n")
    finally:
        os.close(fd)


def _write(path: str | Path, mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("escaped\n")


def _write_via_reopened_fd(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _write(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _symlink_then_write(link: str, target: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(target, link)
    _write(link)


def _remount_root_rw_then_write(path: str) -> None:
    _libc_call("mount", None, b"/", None, MS_REMOUNT | MS_BIND, None)
    _write(path)


def _mount_over(directory: str) -> None:
    _libc_call("mount", b"tmpfs", directory.encode(), b"tmpfs", 0, None)


def write_attacks(root: str, home_file: str) -> dict[str, str]:
    """Every way we know to change a file of a read-only tree; none may work."""
    file, d, rw = f"{root}/file.txt", f"{root}/dir", f"{root}/rw"
    return {
        "write": attempt(lambda: _write(file)),
        "truncate": attempt(lambda: os.truncate(file, 0)),
        "create": attempt(lambda: _write(f"{d}/new.txt", "x")),
        "mkdir": attempt(lambda: os.mkdir(f"{d}/newdir")),
        "unlink": attempt(lambda: os.unlink(file)),
        "rename-in-place": attempt(lambda: os.rename(file, f"{d}/moved.txt")),
        "rename-into-writable": attempt(lambda: os.rename(file, f"{rw}/moved.txt")),
        "chmod": attempt(lambda: os.chmod(file, 0o777)),
        "chown": attempt(lambda: os.chown(file, 0, 0)),
        "utime": attempt(lambda: os.utime(file, (0, 0))),
        "setxattr": attempt(lambda: os.setxattr(file, "user.escape", b"1")),
        "hard-link-into-writable": attempt(lambda: os.link(file, f"{rw}/hardlink.txt")),
        "symlink-from-writable": attempt(lambda: _symlink_then_write(f"{rw}/symlink", file)),
        "/proc/self/root": attempt(lambda: _write(f"/proc/self/root{file}")),
        "/proc/self/fd reopen": attempt(lambda: _write_via_reopened_fd(file)),
        "/etc": attempt(lambda: _write("/etc/sandboxed-escape", "x")),
        "/usr": attempt(lambda: _write("/usr/sandboxed-escape", "x")),
        "home": attempt(lambda: _write(home_file)),
        "remount-rw": attempt(lambda: _remount_root_rw_then_write(file)),
        "mount-over": attempt(lambda: _mount_over(d)),
        "open_by_handle_at via /tmp": attempt(lambda: _write_by_handle(file, "/tmp")),
        "open_by_handle_at via rw": attempt(lambda: _write_by_handle(file, rw)),
    }


def allowed_writes(root: str) -> dict[str, str]:
    rw = f"{root}/rw"
    return {
        "rw write": attempt(lambda: _write(f"{rw}/inside.txt")),
        "rw create": attempt(lambda: _write(f"{rw}/created-{os.getuid()}.txt", "x")),
        "/tmp": attempt(lambda: _write("/tmp/scratch", "x")),
        "/var/tmp": attempt(lambda: _write("/var/tmp/scratch", "x")),
    }


def _listing_shows(directory: str, name: str) -> None:
    if name not in os.listdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"{name} is not listed", directory)


def hidden_reads(root: str) -> dict[str, str]:
    h = f"{root}/hidden"
    return {
        "list": attempt(lambda: _listing_shows(h, "secret.txt")),
        "read": attempt(lambda: Path(f"{h}/secret.txt").read_text()),
        "/proc/self/root": attempt(lambda: Path(f"/proc/self/root{h}/secret.txt").read_text()),
        "write": attempt(lambda: _write(f"{h}/new.txt", "x")),
    }


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_no_write_trick_changes_a_read_only_file_system(
    boxes: dict[str, Any], tree: Tree, who: str
) -> None:
    before = tree.snapshot()
    outcomes = boxes[who](write_attacks, str(tree.root), str(tree.home_file))
    assert {k: v for k, v in outcomes.items() if v == OK} == {}
    assert tree.snapshot() == before


def test_the_write_tricks_work_outside_a_sandbox(tree: Tree) -> None:
    # The same attacks against a throw-away copy, unsandboxed: each one is real.
    copy = tree.root.parent / (tree.root.name + "-control")
    shutil.copytree(tree.root, copy, ignore=shutil.ignore_patterns("hidden"))
    try:
        (copy / "home.txt").write_text("x")
        outcomes = {
            "write": attempt(lambda: _write(copy / "file.txt")),
            "symlink-from-writable": attempt(
                lambda: _symlink_then_write(f"{copy}/rw/symlink", f"{copy}/file.txt")
            ),
            "/proc/self/root": attempt(lambda: _write(f"/proc/self/root{copy}/file.txt")),
            "open_by_handle_at": attempt(lambda: _write_by_handle(f"{copy}/file.txt", "/tmp")),
        }
    finally:
        shutil.rmtree(copy)
    assert set(outcomes.values()) == {OK}


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_read_write_paths_and_private_tmp_stay_writable(
    boxes: dict[str, Any], tree: Tree, who: str
) -> None:
    assert set(boxes[who](allowed_writes, str(tree.root)).values()) == {OK}
    assert "escaped" in (tree.rw / "inside.txt").read_text()


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_inaccessible_paths_cannot_be_read_or_listed(
    boxes: dict[str, Any], tree: Tree, who: str
) -> None:
    outcomes = boxes[who](hidden_reads, str(tree.root))
    assert {k: v for k, v in outcomes.items() if v == OK} == {}
    assert sorted(os.listdir(tree.hidden)) == ["secret.txt"]


def _root_block_device() -> str:
    """The /dev path of the block device holding the root file system (or '')."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            uevent = Path(f"/sys/dev/block/{fields[2]}/uevent")
            if uevent.exists():
                for entry in uevent.read_text().splitlines():
                    if entry.startswith("DEVNAME="):
                        return "/dev/" + entry.split("=", 1)[1]
    return ""


def raw_disk_attacks(device: str, majmin: tuple[int, int]) -> dict[str, str]:
    # Reading is enough to prove the device is reachable; nothing here ever writes it.
    node = "/tmp/disk-node"
    return {
        "open": attempt(lambda: os.close(os.open(device, os.O_RDONLY))),
        "mknod": attempt(lambda: os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(*majmin))),
        "open-mknod": attempt(lambda: os.close(os.open(node, os.O_RDONLY))),
    }


def test_root_cannot_reach_the_raw_disk_under_read_only(boxes: dict[str, Any]) -> None:
    device = _root_block_device()
    if not device or not os.path.exists(device):
        pytest.skip("the root file system has no block device here")
    st = os.stat(device)
    majmin = (os.major(st.st_rdev), os.minor(st.st_rdev))
    outcomes = boxes["root"](raw_disk_attacks, device, majmin)
    # The reasons show that the sandbox refused, not this host's own device policy
    # (which here forbids even the host's root to open the disk): the node is absent
    # from the sandbox's /dev, and creating one needs CAP_MKNOD, which it lacks.
    assert outcomes == {
        "open": "FileNotFoundError ENOENT",
        "mknod": "PermissionError EPERM",
        "open-mknod": "FileNotFoundError ENOENT",
    }
