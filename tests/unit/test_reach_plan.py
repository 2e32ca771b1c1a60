"""The reachability plan: pure decisions from file modes, no systemd.

Directory trees are built in a temporary directory with chosen modes; the
plan is computed for ``nobody`` and must bind exactly what is needed, read-only,
or refuse with an error naming the path and the remedy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxed._errors import UnreachableCodeError
from sandboxed.runtime.reach import (
    Identity,
    blocking_ancestor,
    check_module_file,
    needed_paths,
    plan,
)

NOBODY = Identity(65534, frozenset({65534}))
ROOT = Identity(0, frozenset({0}))

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds trees owned by root")


def tree(base: Path, spec: dict[str, int]) -> None:
    """Create directories (names ending in /) and files under ``base`` with the given modes."""
    for rel in spec:
        p = base / rel.rstrip("/")
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x = 1\n")
    # Modes last, deepest first, so that making a parent 0700 does not stop us.
    for rel, mode in sorted(spec.items(), key=lambda kv: -kv[0].count("/")):
        (base / rel.rstrip("/")).chmod(mode)


@pytest.fixture
def base() -> Iterator[Path]:
    """A traversable scratch directory (pytest's own tmp_path lies below a 0700 one)."""
    p = Path(tempfile.mkdtemp(prefix="sbx-unit-reach-", dir="/tmp"))
    p.chmod(0o755)
    try:
        yield p
    finally:
        for d, _, _ in os.walk(p):
            os.chmod(d, 0o755)
        shutil.rmtree(p, ignore_errors=True)


@pytest.fixture
def in_root_home() -> Iterator[Path]:
    """A 0755 directory right below /root (which is 0700 on this kind of machine)."""
    if os.geteuid() != 0 or not os.path.isdir("/root"):
        pytest.skip("needs root and /root")
    p = Path("/root") / f"sbx-unit-reach-{os.getpid()}"
    p.mkdir(mode=0o755, exist_ok=True)
    p.chmod(0o755)
    (p / "lib").mkdir(exist_ok=True)
    (p / "lib").chmod(0o755)
    try:
        yield p
    finally:
        shutil.rmtree(p, ignore_errors=True)


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "who", "bits", "expected"),
    [
        (0o700, 0, 0, NOBODY, 1, False),
        (0o701, 0, 0, NOBODY, 1, True),
        (0o750, 0, 65534, NOBODY, 5, True),
        (0o705, 65534, 0, NOBODY, 5, True),
        (0o075, 65534, 0, NOBODY, 5, False),
        (0o600, 0, 0, ROOT, 4, True),
        (0o644, 0, 0, Identity(None, frozenset()), 4, True),
        (0o640, 0, 0, Identity(None, frozenset()), 4, False),
    ],
    ids=[
        "other-no-x",
        "other-x",
        "group-rx",
        "owner-rx",
        "owner-bits-win-over-other",
        "root-reads-anything",
        "unknown-uid-other-r",
        "unknown-uid-no-other-r",
    ],
)
def test_identity_applies_owner_group_and_other_bits_like_the_kernel(
    mode: int, uid: int, gid: int, who: Identity, bits: int, expected: bool
) -> None:
    st = os.stat_result((0o040000 | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))
    assert who.can(st, bits) is expected


def test_identity_of_nobody_and_root_and_dynamic_users() -> None:
    assert Identity.of("nobody").uid == 65534
    assert Identity.of(None) == ROOT
    assert Identity.of("root") == ROOT
    assert Identity.of("nobody", dynamic=True).uid is None
    assert Identity.of("65534").uid == 65534


@needs_root
def test_blocking_ancestor_is_the_topmost_directory_the_user_cannot_traverse(base: Path) -> None:
    tree(base, {"a/": 0o700, "a/b/": 0o700, "a/b/c/": 0o755, "open/": 0o755, "open/d/": 0o755})
    assert blocking_ancestor(str(base / "a/b/c"), NOBODY) == str(base / "a")
    assert blocking_ancestor(str(base / "open/d"), NOBODY) is None
    assert blocking_ancestor(str(base / "a/b/c"), ROOT) is None


@needs_root
def test_a_path_below_a_0700_directory_gets_a_read_only_tmpfs_and_a_read_only_bind(
    base: Path,
) -> None:
    tree(base, {"home/": 0o700, "home/venv/": 0o755, "home/code/": 0o755, "home/private/": 0o755})
    venv, code = str(base / "home/venv"), str(base / "home/code")
    r = plan([venv, code], NOBODY, None)
    assert r.tmpfs == (str(base / "home"),)
    assert r.binds == (venv, code)  # exactly the needed paths, not their siblings
    assert r.protect_home is None
    assert r.unreachable == ()


@needs_root
def test_reachable_paths_need_no_mount_at_all(base: Path) -> None:
    tree(base, {"pub/": 0o755, "pub/lib/": 0o755})
    assert plan([str(base / "pub/lib")], NOBODY, None) == plan([], NOBODY, None)


@needs_root
def test_nested_paths_are_bound_once(base: Path) -> None:
    tree(base, {"h/": 0o700, "h/v/": 0o755, "h/v/lib/": 0o755})
    r = plan([str(base / "h/v"), str(base / "h/v/lib")], NOBODY, None)
    assert r.binds == (str(base / "h/v"),)


@needs_root
def test_a_path_inside_inaccessible_paths_is_refused_with_the_remedy(base: Path) -> None:
    tree(base, {"code/": 0o755})
    code = str(base / "code")
    with pytest.raises(UnreachableCodeError) as info:
        plan([code], NOBODY, None, inaccessible=[f"-{base}"])
    assert info.value.path == code
    assert "InaccessiblePaths" in str(info.value)
    assert "remove that entry" in info.value.remedy


@needs_root
def test_a_path_the_user_cannot_read_itself_is_refused_with_the_remedy(base: Path) -> None:
    tree(base, {"secret/": 0o700})
    with pytest.raises(UnreachableCodeError) as info:
        plan([str(base / "secret")], NOBODY, None)
    assert info.value.path == str(base / "secret")
    assert "700" in str(info.value)
    assert "chmod o+rX" in info.value.remedy
    assert plan([str(base / "secret")], ROOT, None).binds == ()


@needs_root
def test_an_unreachable_optional_path_is_listed_not_raised(base: Path) -> None:
    tree(base, {"pub/": 0o755, "secret/": 0o700})
    r = plan([str(base / "pub")], NOBODY, None, optional=[str(base / "secret")])
    assert [e.path for e in r.unreachable] == [str(base / "secret")]
    assert str(base / "secret") not in r.binds


@needs_root
def test_a_path_inside_a_temporary_file_system_is_bound_into_it(base: Path) -> None:
    tree(base, {"t/": 0o755, "t/code/": 0o755})
    r = plan([str(base / "t/code")], NOBODY, None, temporary=[f"{base / 't'}:ro"])
    assert r.binds == (str(base / "t/code"),)
    assert r.tmpfs == ()


def test_protect_home_yes_becomes_tmpfs_with_the_needed_paths_bound(in_root_home: Path) -> None:
    lib = str(in_root_home / "lib")
    r = plan([lib], NOBODY, "yes")
    assert r.protect_home == "tmpfs"
    assert r.binds == (lib,)
    assert r.tmpfs == ()  # ProtectHome=tmpfs already hides /root
    assert any("ProtectHome=yes became ProtectHome=tmpfs" in n for n in r.notes)


def test_protect_home_read_only_over_a_0700_home_becomes_tmpfs(in_root_home: Path) -> None:
    lib = str(in_root_home / "lib")
    r = plan([lib], NOBODY, "read-only")
    assert r.protect_home == "tmpfs"
    assert r.binds == (lib,)
    assert any("read-only became ProtectHome=tmpfs" in n for n in r.notes)


def test_protect_home_read_only_for_root_needs_no_change(in_root_home: Path) -> None:
    r = plan([str(in_root_home / "lib")], ROOT, "read-only")
    assert r.protect_home is None
    assert r.tmpfs == ()


def test_protect_home_tmpfs_is_kept_and_the_paths_bound(in_root_home: Path) -> None:
    lib = str(in_root_home / "lib")
    r = plan([lib], NOBODY, "tmpfs")
    assert r.protect_home is None
    assert r.binds == (lib,)


def test_without_protect_home_a_0700_home_gets_a_tmpfs_over_it(in_root_home: Path) -> None:
    lib = str(in_root_home / "lib")
    r = plan([lib], NOBODY, None)
    assert r.tmpfs == ("/root",)
    assert r.binds == (lib,)


def test_needed_paths_cover_the_interpreter_and_the_standard_library() -> None:
    import sys
    import sysconfig

    required, optional = needed_paths()
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    for p in (exe_dir, stdlib):
        assert any(p == r or p.startswith(r + "/") for r in required), p
    assert all(os.path.isabs(p) for p in [*required, *optional])


@needs_root
def test_check_module_file_refuses_an_unreadable_module_and_its_unlistable_package(
    base: Path,
) -> None:
    tree(
        base,
        {
            "root/": 0o755,
            "root/ok.py": 0o644,
            "root/secret.py": 0o600,
            "root/pkg/": 0o700,
            "root/pkg/mod.py": 0o644,
        },
    )
    roots = [str(base / "root")]
    check_module_file(str(base / "root/ok.py"), roots, NOBODY)
    with pytest.raises(UnreachableCodeError) as info:
        check_module_file(str(base / "root/secret.py"), roots, NOBODY)
    assert info.value.path == str(base / "root/secret.py")
    assert "chmod o+rX" in info.value.remedy
    with pytest.raises(UnreachableCodeError) as pkg:
        check_module_file(str(base / "root/pkg/mod.py"), roots, NOBODY)
    assert pkg.value.path == str(base / "root/pkg")
    check_module_file(str(base / "root/secret.py"), roots, ROOT)


def test_code_under_a_private_tmp_is_bound_in_read_only(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    for p in (tmp_path, code):
        p.chmod(0o755)
    r = plan([str(code)], NOBODY, None, temporary=["/tmp", "/var/tmp"])
    assert r.binds == (str(code),)
    assert r.tmpfs == ()


@pytest.mark.parametrize("asked", ["yes", "tmpfs", "read-only"])
def test_on_systemd_257_protect_home_is_spelled_out_with_a_traversable_root(
    in_root_home: Path, asked: str
) -> None:
    # 257's ProtectHome=tmpfs mounts a 0700 /root: nobody could not reach the binds.
    lib = str(in_root_home / "lib")
    r = plan([lib], NOBODY, asked, sealed_root=True)
    assert r.protect_home == "no"
    assert r.home_tmpfs == ("/home:ro", "/run/user:ro", "/root:ro,mode=0711")
    assert r.binds == (lib,)
    assert [n for n in r.notes if "became" in n] == [
        n for n in r.notes if f"ProtectHome={asked} became ProtectHome=no" in n
    ]
    assert any("0700" in n and lib in n for n in r.notes)


def test_before_257_protect_home_tmpfs_stays(in_root_home: Path) -> None:
    r = plan([str(in_root_home / "lib")], NOBODY, "tmpfs", sealed_root=False)
    assert r.protect_home is None and r.home_tmpfs == ()


def test_root_itself_traverses_a_sealed_root_and_keeps_protect_home(in_root_home: Path) -> None:
    r = plan([str(in_root_home / "lib")], ROOT, "tmpfs", sealed_root=True)
    assert r.protect_home is None and r.home_tmpfs == ()
