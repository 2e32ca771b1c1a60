"""The command line systemd runs as a sandbox unit's main process, and what it needs.

The unit's interpreter starts with ``-S -s -B`` (no ``site``, no user site, no
bytecode writes) and a short boot program (:data:`WORKER_BOOT`) that sets
``sys.path``, registers the ``sandboxed`` package without running its
``__init__`` (the caller's side: decorator, wrapt, attrs, D-Bus... ~200 ms;
:mod:`sandboxed.worker.main` completes it when user code asks for a public
name) and starts the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The packages (and top-level modules) the unit imports before any user code.
WORKER_PACKAGES = ("wire", "worker")
WORKER_TOP_MODULES = ("_context", "_errors")


def worker_sources() -> list[str]:
    """The source files of every module the unit's start-up may import."""
    files = [os.path.join(PACKAGE_DIR, name + ".py") for name in WORKER_TOP_MODULES]
    for pkg in WORKER_PACKAGES:
        d = os.path.join(PACKAGE_DIR, pkg)
        files.extend(os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".py"))
    return files


_bytecode_checked = False


def _ensure_bytecode() -> None:
    """Compile the modules every worker imports, if their bytecode is missing or stale.

    The unit's interpreter runs with -B, usually on a read-only file system, and
    often as another user: it cannot cache bytecode, so without this each cold
    start would compile them from source again (some 20 ms). PYTHONDONTWRITEBYTECODE
    in the caller's environment would otherwise leave them uncompiled for good.
    """
    global _bytecode_checked
    if _bytecode_checked:
        return
    _bytecode_checked = True
    import importlib.util
    import py_compile

    for src in worker_sources():
        try:
            cached = importlib.util.cache_from_source(src)
            if os.path.exists(cached) and os.stat(cached).st_mtime >= os.stat(src).st_mtime:
                continue
            py_compile.compile(src, cfile=cached, doraise=True)
        except (OSError, py_compile.PyCompileError, NotImplementedError):
            return  # not writable (a system install is compiled already): nothing to do


# The unit's interpreter starts with nothing imported (-S): set sys.path from hex
# (no json, no base64 to import), register the package without running its
# __init__ (the caller side: wrapt, attrs, D-Bus...), and start the supervisor.
# Statements are separated by newlines, never ';': systemd writes ExecStart= into
# the unit's transient file with ';' escaped as '\;' and reads that back verbatim,
# so a unit re-read from its file (a daemon-reload before its start job ran) would
# run '\;'-laden text: a SyntaxError, and a start that fails for no visible reason.
WORKER_BOOT = "\n".join(
    (
        "import sys",
        "sys.path[:]=bytes.fromhex(sys.argv[1]).decode().split('\\0')",
        "p=type(sys)('sandboxed')",
        "p.__path__=[sys.argv[2]]",
        "p.__file__=sys.argv[2]+'/__init__.py'",
        "sys.modules['sandboxed']=p",
        "import sandboxed.worker.main as w",
        "w.site(sys.argv[3])",
        "w.main()",
    )
)


_site_cache: str | None = None


def _site_setup() -> str:
    """What ``site`` did in this interpreter that the worker (started with ``-S``) must redo.

    ``site`` costs a cold start some 25 ms, mostly in .pth files; the worker gets
    this process's ``sys.path`` anyway, so it only needs the ``import`` lines of
    the .pth files in those directories (import hooks such as editable installs'
    finders) — except the one of sandboxed's own editable install, whose package
    the worker registers directly — and sitecustomize/usercustomize if they ran
    here. Returned as hex of NUL-separated fields: flags, then the lines.
    """
    global _site_cache
    if _site_cache is None:
        lines: list[str] = []
        for d in dict.fromkeys(sys.path):
            if not d or not os.path.isdir(d):
                continue
            try:
                names = sorted(n for n in os.listdir(d) if n.endswith(".pth"))
            except OSError:
                continue
            for name in names:
                # The distribution is systemd-sandboxed (older venvs: sandboxed).
                if name.startswith(("__editable__.systemd_sandboxed-", "__editable__.sandboxed-")):
                    continue
                try:
                    with open(os.path.join(d, name), encoding="utf-8") as f:
                        for line in f:
                            if line.startswith(("import ", "import\t")):
                                lines.append(line.rstrip("\n"))
                except OSError:
                    continue
        flags = ("s" if "sitecustomize" in sys.modules else "") + (
            "u" if "usercustomize" in sys.modules else ""
        )
        _site_cache = "\0".join([flags, *lines]).encode().hex()
    return _site_cache


def namespace_inodes() -> dict[str, int]:
    """This process's namespace inode numbers, for the worker's check that the ones it
    was promised are not ours (see :mod:`sandboxed.worker.guard`)."""
    out = {}
    for kind in ("net", "user", "ipc", "mnt", "uts"):
        with contextlib.suppress(OSError):
            out[kind] = os.stat(f"/proc/self/ns/{kind}").st_ino
    return out


def guard_argument(namespaces: Sequence[str], signals: bool) -> str:
    """The guard spec :func:`sandboxed.worker.guard.lock_down` reads from the command line."""
    if not namespaces and not signals:
        return ""
    mine = namespace_inodes()
    fields = ["signals"] if signals else []
    if namespaces:
        fields.append("ns=" + ",".join(namespaces))
        fields += [f"{k}={mine[k]}" for k in namespaces if k in mine]
    return ";".join(fields)


def with_preload(site_arg: str, modules: Sequence[str]) -> str:
    """``site_arg`` plus ``import`` lines for ``modules``, run by the supervisor at boot.

    Every worker is forked from the supervisor, so what it imported there each
    worker has without importing it again (the pytest plugin preloads pytest: its
    tests each get a fresh worker). A name that fails to import is skipped there.
    """
    if not modules:
        return site_arg
    fields = bytes.fromhex(site_arg).decode().split("\0")
    fields += [f"import {m}" for m in modules if m.replace(".", "").replace("_", "").isalnum()]
    return "\0".join(fields).encode().hex()


def exec_properties(
    ctl_fd: int,
    diag_fd: int,
    pinned: bool = False,
    guard: str = "",
    preload: Sequence[str] = (),
) -> list[tuple[str, str, object]]:
    """The unit properties that start the worker on ``ctl_fd`` (stdin/stdout) and
    ``diag_fd`` (stderr), with this interpreter and this process's ``sys.path``.

    ``pinned``: systemd keeps the unit loaded after it ended until the caller read why
    (``AddRef``: released by ``Unref()``, or when the caller's bus connection closes,
    even if it dies); otherwise a failed unit stays until ``ResetFailedUnit``.
    ``guard`` is the spec of :func:`guard_argument`, for the supervisor; ``preload``
    modules the supervisor imports at boot (:func:`with_preload`)."""
    path = [os.getcwd() if p == "" else p for p in sys.path]
    arg = "\0".join(path).encode().hex()
    site_arg = with_preload(_site_setup(), preload)
    _ensure_bytecode()
    exe = sys.executable
    return [
        ("Description", "s", f"sandboxed worker of pid {os.getpid()}"),
        (
            "ExecStart",
            "a(sasb)",
            [
                (
                    exe,
                    [exe, "-S", "-s", "-B", "-c", WORKER_BOOT, arg, PACKAGE_DIR, site_arg, guard],
                    False,
                )
            ],
        ),
        ("StandardInputFileDescriptor", "h", ctl_fd),
        ("StandardOutputFileDescriptor", "h", ctl_fd),
        ("StandardErrorFileDescriptor", "h", diag_fd),
        ("CollectMode", "s", "inactive-or-failed" if pinned else "inactive"),
        *([("AddRef", "b", True)] if pinned else []),
    ]
