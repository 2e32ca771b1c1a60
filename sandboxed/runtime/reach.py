"""Making the caller's interpreter and code reachable inside the sandbox, without weakening it.

The worker must load the interpreter, the standard library, third-party
packages and the user's modules as the unit's ``User=`` and under its mount
restrictions. On many machines these live under a 0700 home (``/root``), or
under a home hidden by ``ProtectHome=``. We never grant more than reading
exactly those directories:

* for each needed path that the sandbox's user cannot traverse, the topmost
  ancestor that blocks it is replaced by an empty read-only tmpfs
  (``TemporaryFileSystem=/root:ro``) and the needed directories are
  bind-mounted read-only into it (``BindReadOnlyPaths=``) — everything else
  in that ancestor stays invisible (it was unreadable to the user anyway);
* ``ProtectHome=yes`` makes homes inaccessible *directories* into which
  nothing can be mounted; when a needed path is inside a home it becomes
  ``ProtectHome=tmpfs`` — the homes are empty and read-only just the same —
  plus the same read-only binds;
* systemd 257 made ``ProtectHome=tmpfs``'s ``/root`` a read-only tmpfs of
  mode 0700 (earlier: 1777), which a user other than root cannot traverse to
  reach the binds; with ``sealed_root`` (such a manager) and a needed path
  under ``/root``, ``ProtectHome=`` is spelled out instead as what it mounts,
  ``TemporaryFileSystem=/home:ro /run/user:ro /root:ro,mode=0711`` — just as
  empty and read-only, and ``/root`` still cannot be listed;
* a needed path inside ``InaccessiblePaths=`` or that is itself unreadable
  to the user cannot be reached without weakening what was asked: that is an
  :class:`UnreachableCodeError` naming the path and the remedy.

Writes through these binds are impossible (they are read-only), and no file
descriptor from outside the sandbox's mount namespace is handed in.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys
import sysconfig
from collections.abc import Iterable, Sequence

import attrs

from sandboxed._errors import UnreachableCodeError

HOMES = ("/home", "/root", "/run/user")
#: ProtectHome=tmpfs spelled out, with a /root the sandbox's user can traverse but not list.
HOMES_AS_TMPFS = ("/home:ro", "/run/user:ro", "/root:ro,mode=0711")


@attrs.frozen
class Identity:
    """Who the sandbox runs as, for permission checks (None uid: unknown, e.g. DynamicUser)."""

    uid: int | None
    gids: frozenset[int]

    @classmethod
    def of(cls, user: str | None, dynamic: bool = False, private_users: bool = False) -> Identity:
        if dynamic or private_users:
            return cls(None, frozenset())
        if user is None or user in ("root", "0"):
            return cls(0, frozenset({0}))
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            return cls(int(user) if user.isdigit() else None, frozenset())
        import grp

        gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
        return cls(pw.pw_uid, frozenset(gids))

    def can(self, st: os.stat_result, bits: int) -> bool:
        """Would this identity get ``bits`` (a combination of 4/2/1) on a file with ``st``?"""
        if self.uid == 0:
            return True
        mode = st.st_mode
        if self.uid is not None and st.st_uid == self.uid:
            return (mode >> 6) & bits == bits
        if st.st_gid in self.gids:
            return (mode >> 3) & bits == bits
        return mode & bits == bits


def needed_paths(extra: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(required, optional) directories and zip files the worker reads.

    Required: the interpreter, the standard library, site-packages and sandboxed
    itself — without them no call can work. Optional: the other ``sys.path``
    entries and ``extra`` — needed only by calls whose code lives there.
    """
    paths = sysconfig.get_paths()
    required = [
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.abspath(sys.executable)),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        paths.get("stdlib", ""),
        paths.get("platstdlib", ""),
        paths.get("purelib", ""),
        paths.get("platlib", ""),
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    ]
    return _existing(required), [p for p in _existing([*sys.path, *extra]) if p not in required]


def _existing(candidates: Iterable[str]) -> list[str]:
    out: list[str] = []
    for c in candidates:
        if not c:
            continue
        p = os.path.realpath(os.path.abspath(c))
        if os.path.exists(p) and p not in out:
            out.append(p)
    return out


def _minimal(paths: Sequence[str]) -> list[str]:
    """Drop paths that lie inside another path of the list."""
    keep: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in keep):
            keep.append(p)
    kept = set(keep)
    return [p for p in dict.fromkeys(paths) if p in kept]  # in the order given


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def blocking_ancestor(path: str, who: Identity) -> str | None:
    """The topmost directory on ``path``'s way that ``who`` cannot traverse, if any."""
    parts = path.strip("/").split("/")
    cur = ""
    for part in parts[:-1]:
        cur += "/" + part
        try:
            st = os.stat(cur)
        except OSError:
            return None
        if not who.can(st, 1):
            return cur
    return None


@attrs.frozen
class Reach:
    """What to add to a unit so that ``paths`` are readable inside it."""

    tmpfs: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()
    protect_home: str | None = None  # a replacement value for ProtectHome=, if one is needed
    home_tmpfs: tuple[str, ...] = ()  # TemporaryFileSystem= entries that replace ProtectHome=
    notes: tuple[str, ...] = ()
    unreachable: tuple[UnreachableCodeError, ...] = ()  # optional paths left out, and why


def plan(
    paths: Sequence[str],
    who: Identity,
    protect_home: str | None,
    inaccessible: Sequence[str] = (),
    temporary: Sequence[str] = (),
    optional: Sequence[str] = (),
    binder: Identity | None = None,
    sealed_root: bool = False,
) -> Reach:
    """Compute the mounts that make ``paths`` reachable; raise UnreachableCodeError if impossible.

    ``optional`` paths that cannot be reached are left out and listed in
    ``Reach.unreachable`` instead (a call whose code lives there fails then).
    ``binder`` is who sets up the mounts when it is not root: a user manager
    can bind in only what its own user can reach.
    ``sealed_root``: the manager's ``ProtectHome=tmpfs`` makes ``/root`` 0700 (systemd 257+).
    """
    required = _minimal(paths)
    reachable_optional = []
    unreachable = []
    for p in _minimal(optional):
        if any(p == r or p.startswith(r.rstrip("/") + "/") for r in required):
            continue
        try:
            plan(
                [p],
                who,
                protect_home,
                inaccessible,
                temporary,
                binder=binder,
                sealed_root=sealed_root,
            )
        except UnreachableCodeError as e:
            unreachable.append(e)
        else:
            reachable_optional.append(p)
    r = _plan(
        _minimal([*required, *reachable_optional]),
        who,
        protect_home,
        inaccessible,
        temporary,
        binder,
        sealed_root,
    )
    return attrs.evolve(r, unreachable=tuple(unreachable))


def _plan(
    paths: Sequence[str],
    who: Identity,
    protect_home: str | None,
    inaccessible: Sequence[str],
    temporary: Sequence[str],
    binder: Identity | None = None,
    sealed_root: bool = False,
) -> Reach:
    tmpfs: list[str] = []
    binds: list[str] = []
    notes: list[str] = []
    new_protect_home = None
    spell_out: list[str] = []
    hidden_by_home = protect_home in ("yes", "true", "tmpfs", "read-only")
    for p in paths:
        for blocked in inaccessible:
            b = blocked.lstrip("-+")
            if _under(p, b):
                raise UnreachableCodeError(
                    p,
                    f"it lies inside InaccessiblePaths={blocked}",
                    "remove that entry, or install the interpreter and your code outside it",
                )
        st = os.stat(p)
        want = 5 if stat.S_ISDIR(st.st_mode) else 4
        if not who.can(st, want):
            raise UnreachableCodeError(
                p,
                f"it is not readable by the sandbox's user (mode {stat.S_IMODE(st.st_mode):o}, "
                f"owner uid {st.st_uid})",
                "make it world-readable (chmod o+rX), or run the sandbox as a user who can read it",
            )
        home = next((h for h in HOMES if _under(p, h) and h != "/"), None)
        in_temp = next((t for t in temporary if _under(p, t.split(":", 1)[0])), None)
        anc = blocking_ancestor(p, who)
        if home is not None and hidden_by_home:
            if protect_home in ("yes", "true"):
                new_protect_home = "tmpfs"
                notes.append(
                    f"ProtectHome=yes became ProtectHome=tmpfs: {p} is bind-mounted read-only "
                    "into the (empty, read-only) homes"
                )
            if protect_home == "read-only" and anc is not None:
                # A read-only home is still 0700: hide it instead and bind what is needed.
                new_protect_home = "tmpfs"
                notes.append(
                    f"ProtectHome=read-only became ProtectHome=tmpfs: {p} lies below {anc}, "
                    "which the sandbox's user could not traverse (and so could not read)"
                )
            if sealed_root and _under(p, "/root") and who.uid != 0:
                spell_out.append(p)
            binds.append(p)
        elif in_temp is not None:
            binds.append(p)
        elif anc is not None:
            if binder is not None and blocking_ancestor(p, binder) is not None:
                who_binds = f"uid {binder.uid}" if binder.uid is not None else "its user"
                raise UnreachableCodeError(
                    p,
                    f"it lies below {anc}, which {who_binds} cannot traverse, and the user "
                    f"manager that starts the sandbox (running as {who_binds}) cannot bind it "
                    "in: it has no more access than its user",
                    f"use an interpreter and code that {who_binds} can read (a venv in its "
                    "home, the system's python3), or run as root",
                )
            if not any(_under(anc, t) for t in tmpfs):
                tmpfs.append(anc)
            binds.append(p)
    home_tmpfs: tuple[str, ...] = ()
    if spell_out:
        notes = [n for n in notes if not n.startswith(f"ProtectHome={protect_home} became")]
        notes.append(
            f"ProtectHome={protect_home} became ProtectHome=no with TemporaryFileSystem="
            f"{' '.join(HOMES_AS_TMPFS)}: this systemd's ProtectHome= makes /root a 0700 "
            f"tmpfs the sandbox's user cannot traverse to reach {spell_out[0]}, which is "
            "bind-mounted read-only into it"
        )
        new_protect_home, home_tmpfs = "no", HOMES_AS_TMPFS
    return Reach(
        tuple(tmpfs),
        tuple(dict.fromkeys(binds)),
        new_protect_home,
        home_tmpfs,
        tuple(dict.fromkeys(notes)),
    )


def check_module_file(path: str, roots: Sequence[str], who: Identity) -> None:
    """Raise UnreachableCodeError if ``who`` cannot import the module file ``path``.

    ``roots`` are the directories made reachable in the sandbox (``sys.path``
    entries); below the one that holds ``path`` every directory must be
    listable and the file itself readable: read-only binds keep the modes.
    """
    path = os.path.realpath(path)
    root = next((r for r in sorted(roots, key=len, reverse=True) if _under(path, r)), None)
    if root is None or root == "/":
        return
    cur = root.rstrip("/")
    for part in os.path.relpath(os.path.dirname(path), root).split("/"):
        if part in ("", "."):
            continue
        cur += "/" + part
        _require(cur, 5, who)
    _require(path, 4, who)


def _require(path: str, bits: int, who: Identity) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    if not who.can(st, bits):
        what = "listable" if stat.S_ISDIR(st.st_mode) else "readable"
        raise UnreachableCodeError(
            path,
            f"it is not {what} by the sandbox's user (mode {stat.S_IMODE(st.st_mode):o}, "
            f"owner uid {st.st_uid})",
            "make it world-readable (chmod o+rX), or run the sandbox as a user who can read it",
        )
