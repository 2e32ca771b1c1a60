"""What can be checked on this host before a unit starts: users, groups, paths.

systemd reports these only as a unit that fails to start (``217/USER``,
``216/GROUP``, ``226/NAMESPACE``, ``200/CHDIR``); checked here, the error comes
before any unit exists and says what to write instead. The manager shares this
host's user database and file system (the host's systemd, or the embedded one).
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
from typing import Any

from sandboxed._errors import InvalidDirectiveValueError

_PATH_LISTS = (
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "ReadWriteDirectories",
    "ReadOnlyDirectories",
    "InaccessibleDirectories",
)


def check_host(options: Any) -> None:
    """Raise :class:`InvalidDirectiveValueError` for what this host lacks (see module doc)."""
    values = {d.name: d.value for d in getattr(options, "directives", ())}
    dynamic = bool(values.get("DynamicUser"))
    user = values.get("User")
    if user and not dynamic:
        _check_user(str(user))
    group = values.get("Group")
    if group and not dynamic:
        _check_group(str(group))
    for name in _PATH_LISTS:
        for path in values.get(name) or ():
            _check_path(name, str(path))
    for src, _dst, *_rest in values.get("BindPaths") or ():
        _check_path("BindPaths", str(src))
    for src, _dst, *_rest in values.get("BindReadOnlyPaths") or ():
        _check_path("BindReadOnlyPaths", str(src))
    wd = values.get("WorkingDirectory")
    if isinstance(wd, str) and wd and wd != "~":
        _check_path("WorkingDirectory", wd, directory=True)


def _numeric(name: str) -> bool:
    return name.isdigit()


def _check_user(name: str) -> None:
    if _numeric(name):
        return
    try:
        pwd.getpwnam(name)
    except KeyError:
        near = difflib.get_close_matches(name, [p.pw_name for p in pwd.getpwall()], n=3)
        hint = f"; users here with a close name: {', '.join(near)}" if near else ""
        raise InvalidDirectiveValueError(
            "User",
            name,
            "a user of this host (name or UID), or DynamicUser=yes to have systemd "
            "allocate one for the unit",
            f"no user {name!r} on this host{hint}; systemd would fail the unit with 217/USER",
        ) from None


def _check_group(name: str) -> None:
    if _numeric(name):
        return
    try:
        grp.getgrnam(name)
    except KeyError:
        groups = [g.gr_name for g in grp.getgrall()]
        near = difflib.get_close_matches(name, groups, n=3)
        if name == "nobody" and "nogroup" in groups:
            near = ["nogroup", *(n for n in near if n != "nogroup")]
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise InvalidDirectiveValueError(
            "Group",
            name,
            "a group of this host (name or GID); Debian's unprivileged group is 'nogroup'",
            f"no group {name!r} on this host{hint} (systemd would fail the unit with 216/GROUP)",
        ) from None


def _check_path(directive: str, path: str, directory: bool = False) -> None:
    bare = path.lstrip("-+:!")
    if path.startswith("-") or not bare.startswith("/"):
        return  # "-" makes a missing path fine for systemd; specifiers are systemd's
    if "%" in bare:
        return
    if not os.path.lexists(bare):
        raise InvalidDirectiveValueError(
            directive,
            path,
            f"an existing path, or '-{bare}' to let systemd skip it when it is missing",
            f"{bare} does not exist on this host; systemd would fail the unit with "
            + ("200/CHDIR" if directory else "226/NAMESPACE"),
        )
