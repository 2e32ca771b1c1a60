"""pytest plugin: ``@pytest.mark.sandboxed(NoNetwork, ...)`` runs a test's body in a sandbox.

The marker takes what ``@sandboxed(...)`` takes: presets (or their names) and
systemd directives as keywords (``CPUQuota=0.2``), plus ``timeout`` and
``trusted``. Fixtures are set up and torn down in pytest's process, as
usual; their values are passed into the sandbox, so each must be picklable
(``tmp_path``, data, paths... are; ``capsys`` or ``monkeypatch`` are not, and
would act on the wrong process anyway).

Inside the sandbox the test module is loaded from its file with pytest's
assertion rewriting, so a failing ``assert`` reads as it does without the
sandbox. The test's exception comes back as itself and fails the test in the
ordinary way; the sandbox-side traceback is attached to it.

The plugin is registered through the ``pytest11`` entry point: installing
sandboxed is enough. Sandbox units are shared by tests with equal options and
stopped when the session ends.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import re
import sys
import types
from typing import Any

import pytest

MARKER = "sandboxed"

# In the worker: test modules already loaded with rewritten asserts, by file and mtime.
_loaded: dict[tuple[str, int], types.ModuleType] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandboxed(*presets, **directives): run this test's body inside a sandbox "
        "with these options (as @sandboxed(...) takes them)",
    )


class SandboxFixtureError(TypeError):
    """A fixture value that cannot be passed into the sandbox."""


def _options(marker: pytest.Mark) -> Any:
    from sandboxed.directives.options import OptionSet

    return OptionSet.build(*marker.args, **marker.kwargs)


def _picklable(name: str, value: Any) -> None:
    from sandboxed.wire import serial

    try:
        serial.dumps_call(_noop, (value,), {})
    except Exception as e:
        raise SandboxFixtureError(
            f"fixture {name!r} ({type(value).__name__}) cannot be passed into the sandbox: {e}; "
            "use picklable fixtures in sandboxed tests, or drop the marker"
        ) from None


def _noop(*args: Any) -> None:
    """Stand-in target for the picklability check of fixture values."""


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None
    __tracebackhide__ = True
    from sandboxed._errors import ConfigurationError, RemoteError
    from sandboxed.runtime import registry

    fn = pyfuncitem.obj
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise SandboxFixtureError("@pytest.mark.sandboxed does not support async tests yet")
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    try:
        options = _options(marker)
        for name, value in kwargs.items():
            _picklable(name, value)
    except (ConfigurationError, SandboxFixtureError) as e:
        pytest.fail(f"@pytest.mark.sandboxed: {e}", pytrace=False)
    module = pyfuncitem.module
    assert module is not None and module.__file__ is not None
    cls = pyfuncitem.cls
    name = getattr(fn, "__name__", pyfuncitem.originalname)
    qualname = f"{cls.__qualname__}.{name}" if cls is not None else name
    # The test's own code must be readable in the sandbox: its directory goes on the
    # path sandboxed makes reachable (read-only) for the unit's user.
    here = os.path.dirname(os.path.realpath(module.__file__))
    if here not in sys.path:
        sys.path.append(here)
    from sandboxed.runtime.plan import bind_code_dir

    options = bind_code_dir(options, here)
    target = (os.path.realpath(module.__file__), module.__name__, qualname, cls is not None)
    sandbox = registry.get(options)
    try:
        sandbox.call(run_test, (target, kwargs), {})
    except RemoteError as e:
        # pytest's outcomes cannot be rebuilt from their pickles: raise them again here.
        outcome = e.type_name.rpartition(".")[2]
        if outcome == "Skipped":
            raise pytest.skip.Exception(e.message, _use_item_location=True) from None
        if outcome == "XFailed":
            pytest.xfail(e.message)
        _attach(e, options, sandbox)
        raise
    except BaseException as e:
        _attach(e, options, sandbox)
        raise
    return True


def _attach(e: BaseException, options: Any, sandbox: Any) -> None:
    """Attach the sandbox-side traceback as the failure's report (see makereport)."""
    remote = _remote_traceback(e)
    if remote is not None:
        where = f"{sandbox.unit_name or 'a sandbox'} ({options!r})"
        with contextlib.suppress(AttributeError, TypeError):
            e._sandboxed_failure = _Failure.of(remote, where)  # type: ignore[attr-defined]


def _remote_traceback(e: BaseException) -> str | None:
    from sandboxed._errors import RemoteError, RemoteTraceback

    if isinstance(e.__cause__, RemoteTraceback):
        return e.__cause__.tb
    if isinstance(e, RemoteError) and e.remote_traceback:
        return e.remote_traceback
    return None


class _Location:
    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.message = message


class _Failure:
    """A failure's report: the sandbox-side traceback, pytest's native style (duck-typed
    as pytest's ``TerminalRepr`` with a ``reprcrash`` for the summary and junitxml)."""

    def __init__(self, lines: list[str], crash: _Location) -> None:
        self.lines = lines
        self.reprcrash = crash
        self.sections: list[tuple[str, str, str]] = []

    @classmethod
    def of(cls, remote: str, where: str) -> _Failure:
        import linecache

        out = [f"Traceback (most recent call last), inside {where}:"]
        frames: list[tuple[str, int]] = []
        body = remote.strip("\n").splitlines()
        i = 1 if body and body[0].startswith("Traceback") else 0
        while i < len(body) and body[i].startswith("  "):
            line = body[i]
            i += 1
            m = re.match(r'  File "(.*)", line (\d+), in (.*)', line)
            source = []
            while i < len(body) and body[i].startswith("    "):
                source.append(body[i])
                i += 1
            if m is None:
                continue
            path, lineno = m.group(1), int(m.group(2))
            if path == __file__ or os.path.basename(path) == "pytest_plugin.py":
                continue  # the plugin's own frame in the worker
            frames.append((path, lineno))
            out.append(line)
            if not source:
                text = linecache.getline(path, lineno).strip()
                source = [f"    {text}"] if text else []
            out.extend(source)
        message = body[i:]
        out.extend(f"E   {m}" for m in message)
        path, lineno = frames[-1] if frames else ("<sandbox>", 0)
        return cls(out, _Location(path, lineno, "\n".join(message)))

    def toterminal(self, tw: Any) -> None:
        for line in self.lines:
            tw.line(line, red=line.startswith("E   "), bold=line.startswith("E   "))

    def addsection(self, name: str, content: str, sep: str = "-") -> None:
        self.sections.append((name, content, sep))

    def __str__(self) -> str:
        return "\n".join(self.lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    excinfo = call.excinfo
    failure = getattr(excinfo.value, "_sandboxed_failure", None) if excinfo else None
    if (
        failure is not None
        and report.failed
        and item.config.getoption("tbstyle", "auto") not in ("no", "line")
    ):
        report.longrepr = failure
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    from sandboxed.runtime import registry

    registry.shutdown()


def _load(path: str, modname: str) -> types.ModuleType:
    """Load a test module from its file with pytest's assertion rewriting (in the worker)."""
    from _pytest.assertion.rewrite import rewrite_asserts

    key = (path, os.stat(path).st_mtime_ns)
    mod = _loaded.get(key)
    if mod is not None:
        return mod
    with open(path, "rb") as f:
        source = f.read()
    tree = ast.parse(source, filename=path)
    rewrite_asserts(tree, source, path, None)
    code = compile(tree, path, "exec", dont_inherit=True)
    mod = types.ModuleType(modname)
    mod.__file__ = path
    sys.modules[modname] = mod
    exec(code, mod.__dict__)
    _loaded[key] = mod
    return mod


def run_test(target: tuple[str, str, str, bool], kwargs: dict[str, Any]) -> None:
    """Run one test function in the sandbox: ``target`` is (file, module, qualname, is_method)."""
    path, modname, qualname, is_method = target
    obj: Any = _load(path, modname)
    parts = qualname.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    if is_method:
        obj = obj()  # pytest makes a fresh instance for each test, too
    fn = getattr(obj, parts[-1])
    fn(**kwargs)
