"""The entry point systemd runs as a sandbox unit's main process.

systemd starts the interpreter itself (see :mod:`sandboxed.runtime.launch` for
the command line), so every directive of the unit applies to it by
construction (DESIGN.md). Its standard input and output are the *control*
socket; its standard error a diagnostics socket the caller reads only when
start-up fails. :func:`main` hands the control socket to the supervisor.

Imported in the sandbox before any user code: keep its imports small, the
sandbox's start-up time depends on them.
"""

from __future__ import annotations

import os
import socket
import sys

from sandboxed.worker._util import suppress as _suppress
from sandboxed.worker.supervisor import supervise

TYPE_CHECKING = False  # typing stays out of the unit's start-up
if TYPE_CHECKING:
    from typing import Any


def _complete_package_lazily() -> None:
    """Run the package's ``__init__`` (skipped by the boot) on first use of a public name."""
    pkg = sys.modules.get("sandboxed")
    if pkg is None or "__all__" in vars(pkg):
        return

    def __getattr__(name: str) -> Any:  # noqa: N807 - PEP 562
        # Submodules import themselves (``from sandboxed import _serial`` asks here first).
        if name.startswith("_") and name != "__all__":
            raise AttributeError(name)
        del vars(pkg)["__getattr__"]
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "sandboxed", pkg.__file__, submodule_search_locations=list(pkg.__path__)
        )
        try:
            assert spec is not None and spec.loader is not None
            pkg.__spec__ = spec
            spec.loader.exec_module(pkg)
        except BaseException:
            vars(pkg)["__getattr__"] = __getattr__
            raise
        return getattr(pkg, name)

    vars(pkg)["__getattr__"] = __getattr__


def site(setup: str) -> None:
    """Redo what ``site`` did in the caller (the unit's interpreter runs with ``-S``).

    ``setup`` is hex of NUL-separated fields: flags ("s" sitecustomize, "u"
    usercustomize), then the .pth import lines (see ``_sandbox._site_setup``).
    """
    import _sitebuiltins
    import builtins

    flags, *lines = bytes.fromhex(setup).decode().split("\0")
    for line in lines:
        # What site.addpackage does with a .pth file's import lines, failures ignored too.
        with _suppress(Exception):
            exec(line)
    for flag, name in (("s", "sitecustomize"), ("u", "usercustomize")):
        if flag in flags:
            with _suppress(ImportError):
                __import__(name)
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")


def main() -> None:
    _complete_package_lazily()
    ctl = socket.socket(fileno=os.dup(0))
    ctl.set_inheritable(False)
    # fd 0 and 1 were the control socket; make sure nothing else writes there.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    supervise(ctl, sys.argv[4] if len(sys.argv) > 4 else "")


if __name__ == "__main__":
    main()
