"""pytest plugin: ``@pytest.mark.sandboxed(NoNetwork, ...)`` runs a test's body in a sandbox.

The marker takes what ``@sandboxed(...)`` takes: presets (or their names) and
systemd directives as keywords (``CPUQuota=0.2``), plus ``timeout``,
``trusted`` and the plugin's own ``test_env``. Fixtures are set up and torn
down in pytest's process, as usual, and their values are passed into the
sandbox; ``monkeypatch``, ``tmp_path_factory`` and ``tmpdir_factory`` are made
afresh inside instead (they act on the process they live in).

Each test runs in a worker process of its own, forked for it and ended after
it: whatever a test changes in its process (environment, module attributes,
the working directory, imported modules) cannot reach the next test. The test
sees the test process's environment and working directory as they are when
it starts (``test_env`` narrows the environment for untrusted tests).

The session's temporary directory (pytest's ``basetemp``) is bound read-write
into every sandbox the plugin starts, at its own path, and each test's
``tmp_path`` is handed to the sandbox's user: ``tmp_path``, ``tmpdir`` and
``tmp_path_factory`` work under every preset, and what the test writes there
is visible to pytest afterwards. Nothing else becomes writable: the rest of
pytest's per-user temporary directory is hidden behind an empty tmpfs.

Failures are formatted by pytest's own machinery inside the sandbox, where the
real traceback is (assertion rewriting, ``__tracebackhide__``, chained
exceptions, ``--tb`` styles), and travel back as plain data, so ``-n``
(pytest-xdist) reports them as it reports any failure.

The plugin is registered through the ``pytest11`` entry point: installing
sandboxed is enough. Sandbox units are shared by tests with equal options and
stopped when the session ends.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import os
import sys
import tempfile
import types
from collections.abc import Callable, Iterable
from typing import Any

import pytest

MARKER = "sandboxed"
# Made inside the sandbox rather than passed in: they act on their own process.
INSIDE = (
    "monkeypatch",
    "tmp_path_factory",
    "tmpdir_factory",
    "capsys",
    "capsysbinary",
    "caplog",
)
# What a test sees with test_env="minimal": nothing that usually holds a secret.
MINIMAL_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "PYTHONHASHSEED",
    "PYTHONDONTWRITEBYTECODE",
)
MINIMAL_PREFIXES = ("LC_",)
# Variables systemd sets for the unit itself: the unit's values win over the test
# process's (a test running as nobody sees USER=nobody, not the caller's USER).
UNIT_ENV = (
    "USER",
    "LOGNAME",
    "HOME",
    "SHELL",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "CREDENTIALS_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
)

_LONGREPR = pytest.StashKey[Any]()
# What every sandboxed test's worker needs, imported once per unit (see launch.with_preload).
PRELOAD = (
    "pytest",
    "_pytest.assertion.rewrite",
    "_pytest.reports",
    "_pytest._code",
    "sandboxed.pytest_plugin",
    "sandboxed.directives.presets",  # test modules import presets (and with them attrs)
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandboxed")
    group.addoption(
        "--sandboxed-env",
        dest="sandboxed_env",
        default=None,
        choices=("inherit", "minimal"),
        help="environment of @pytest.mark.sandboxed tests without test_env=: 'inherit' "
        "(default: the test process's environment) or 'minimal' (PATH, LANG, LC_*, TZ, TERM)",
    )
    parser.addini(
        "sandboxed_env",
        "default test_env of @pytest.mark.sandboxed tests: inherit or minimal",
        default="inherit",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandboxed(*presets, **directives): run this test's body inside a sandbox with "
        "these options (as @sandboxed(...) takes them; test_env='minimal' for untrusted tests)",
    )


class SandboxFixtureError(TypeError):
    """A fixture value that cannot be passed into the sandbox."""


class _Inside:
    """Stands for a fixture that the worker makes afresh (see :data:`INSIDE`)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _picklable(name: str, value: Any) -> None:
    from sandboxed.wire import serial

    try:
        serial.dumps_call(_noop, (value,), {})
    except Exception as e:
        raise SandboxFixtureError(
            f"fixture {name!r} ({type(value).__name__}) cannot be passed into the sandbox: {e}; "
            f"fixtures made inside the sandbox: {', '.join(INSIDE)}; others must be picklable"
        ) from None


def _noop(*args: Any) -> None:
    """Stand-in target for the picklability check of fixture values."""


def _test_env(config: pytest.Config, mode: object) -> Any:
    if mode is None:
        mode = config.getoption("sandboxed_env") or config.getini("sandboxed_env") or "inherit"
    if mode == "inherit":
        return dict(os.environ)
    if mode == "minimal":
        return {
            k: v
            for k, v in os.environ.items()
            if k in MINIMAL_ENV or k.startswith(MINIMAL_PREFIXES)
        }
    if isinstance(mode, Iterable) and not isinstance(mode, (str, bytes, dict)):
        names = list(mode)
        if all(isinstance(n, str) for n in names):
            return {n: os.environ[n] for n in names if n in os.environ}
    raise SandboxFixtureError(
        f"invalid test_env {mode!r}; accepted: 'inherit' (the test process's environment), "
        "'minimal' (PATH, LANG, LC_*, TZ, TERM) or a list of variable names to pass"
    )


def _basetemp(config: pytest.Config) -> str:
    factory = config._tmp_path_factory  # type: ignore[attr-defined]
    return os.path.realpath(str(factory.getbasetemp()))


def _per_user_tmp(basetemp: str) -> str | None:
    """pytest's ``pytest-of-<user>`` directory when ``basetemp`` lies in it, else None."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    top = os.path.join(os.path.realpath(tempfile.gettempdir()), f"pytest-of-{user}")
    return top if basetemp.startswith(top + "/") else None


def _with_temp(options: Any, basetemp: str) -> Any:
    """``options`` plus the session's temporary directory, read-write, and nothing beside it."""
    import attrs

    from sandboxed.directives.directive import Directive

    adds = [Directive.of("BindPaths", [basetemp])]
    top = _per_user_tmp(basetemp)
    if top is not None:
        # An empty tmpfs over pytest-of-<user> (0700 on the host): the sandbox's user can
        # reach the session's directory, and older sessions' stay out of sight.
        adds.append(Directive.of("TemporaryFileSystem", [f"{top}:mode=0755"]))
    directives = {d.name: d for d in options.directives}
    for add in adds:
        old = directives.get(add.name)
        directives[add.name] = old.merge(add) if old is not None else add
    return attrs.evolve(
        options, directives=tuple(sorted(directives.values(), key=lambda d: d.name))
    )


_prepared_basetemps: set[str] = set()


def _hand_over(path: str, uid: int, basetemp: str) -> None:
    """Make the test's temporary directory the sandbox user's (as root, for another uid)."""
    if os.geteuid() != 0 or uid == 0:
        return
    if basetemp not in _prepared_basetemps:
        # Like /tmp: every sandbox user may make its own directories here
        # (tmp_path_factory.mktemp), none may touch another's. It is reachable only
        # through pytest-of-<user>, which stays 0700 on the host.
        os.chmod(basetemp, 0o1777)
        _prepared_basetemps.add(basetemp)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, -1)
    os.lchown(path, uid, -1)


def _async_mode(item: pytest.Function, fn: Any) -> str | None:
    if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
        return ""
    if item.get_closest_marker("anyio") is not None and "anyio_backend" in item.funcargs:
        return "anyio"
    if item.get_closest_marker("asyncio") is not None:
        return "asyncio"
    return None  # no async plugin wants it: pytest's own hook reports that


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None
    __tracebackhide__ = True
    from sandboxed._errors import ConfigurationError
    from sandboxed.directives.options import OptionSet
    from sandboxed.runtime import registry
    from sandboxed.runtime.plan import bind_code_dir
    from sandboxed.wire import serial

    module = pyfuncitem.module
    assert module is not None and module.__file__ is not None
    cls = pyfuncitem.cls
    name = pyfuncitem.originalname
    qualname = f"{cls.__qualname__}.{name}" if cls is not None else name
    raw = getattr(cls if cls is not None else module, name, None)
    mode = _async_mode(pyfuncitem, inspect.unwrap(raw) if raw is not None else pyfuncitem.obj)
    if mode is None:
        return None
    config = pyfuncitem.config
    kw = dict(marker.kwargs)
    env_mode = kw.pop("test_env", None)
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {}
    try:
        options = OptionSet.build(*marker.args, **kw)
        env = _test_env(config, env_mode)
        for arg in argnames:
            value = pyfuncitem.funcargs[arg]
            if arg in INSIDE:
                value = _Inside(arg)
            else:
                _picklable(arg, value)
            kwargs[arg] = value
    except (ConfigurationError, SandboxFixtureError) as e:
        pytest.fail(f"@pytest.mark.sandboxed: {e}", pytrace=False)
    path = os.path.realpath(module.__file__)
    here = os.path.dirname(path)
    if here not in sys.path:
        sys.path.append(here)
    basetemp = _basetemp(config)
    options = _with_temp(bind_code_dir(options, here), basetemp)
    sandbox = registry.get(options)
    # Each test gets a fresh worker, forked from the unit's supervisor: importing
    # pytest there once spares every test its import (half a second of CPU).
    sandbox.preload = PRELOAD
    uid = sandbox.ensure_unit().info.get("uid")
    tmp = pyfuncitem.funcargs.get("tmp_path")
    if tmp is not None and isinstance(uid, int):
        _hand_over(os.path.realpath(str(tmp)), uid, basetemp)
    elif isinstance(uid, int) and "tmp_path_factory" in argnames:
        _hand_over(basetemp, uid, basetemp)
    safe = bool(getattr(options, "safe_results", False))
    spec = {
        "path": path,
        "module": module.__name__,
        "qualname": qualname,
        "is_method": cls is not None,
        "kwargs": kwargs,
        "env": env,
        "keep_env": sorted({*UNIT_ENV, *(n for n, _ in options.env)}),
        "cwd": os.getcwd(),
        "basetemp": basetemp,
        "async": mode,
        "anyio_backend": pyfuncitem.funcargs.get("anyio_backend") if mode == "anyio" else None,
        "safe": safe,
        "tbstyle": config.getoption("tbstyle", "auto"),
        "fulltrace": bool(config.getoption("fulltrace", False)),
        "showlocals": bool(config.getoption("showlocals", False)),
        "verbosity": config.get_verbosity(),
        "invocation_dir": str(config.invocation_params.dir),
        "where": f"{sandbox.unit_name or 'a sandbox'} ({options!r})",
    }
    outcome = sandbox.call(run_test, (spec,), {}, fresh=True)
    kind = outcome[0]
    if kind == "passed":
        return True
    if kind == "skipped":
        raise pytest.skip.Exception(outcome[1], _use_item_location=True)
    if kind == "xfailed":
        raise pytest.xfail.Exception(outcome[1])
    _, longrepr, parts = outcome
    error = serial.loads_exception(parts[0], parts[1:], safe=safe)
    pyfuncitem.stash[_LONGREPR] = longrepr
    raise error.with_traceback(None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    data = item.stash.get(_LONGREPR, None)
    if data is not None and call.when == "call" and report.failed:
        del item.stash[_LONGREPR]
        from _pytest.reports import TestReport

        rebuilt = TestReport._from_json(data)
        if rebuilt.longrepr is not None:
            report.longrepr = rebuilt.longrepr
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    from sandboxed.runtime import registry

    registry.shutdown()


# -- in the worker ------------------------------------------------------------------------


def _load(path: str, modname: str) -> types.ModuleType:
    """Load a test module from its file with pytest's assertion rewriting (in the worker)."""
    from _pytest.assertion.rewrite import rewrite_asserts

    with open(path, "rb") as f:
        source = f.read()
    tree = ast.parse(source, filename=path)
    rewrite_asserts(tree, source, path, None)
    code = compile(tree, path, "exec", dont_inherit=True)
    mod = types.ModuleType(modname)
    mod.__file__ = path
    sys.modules[modname] = mod
    exec(code, mod.__dict__)
    return mod


def _environment(env: dict[str, str], keep: list[str]) -> None:
    unit = {k: os.environ[k] for k in keep if k in os.environ}
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(unit)


def _fixtures(spec: dict[str, Any], made: list[Any]) -> dict[str, Any]:
    from _pytest.capture import CaptureFixture, SysCapture, SysCaptureBinary
    from _pytest.legacypath import TempdirFactory
    from _pytest.tmpdir import TempPathFactory

    kwargs = dict(spec["kwargs"])
    factory: TempPathFactory | None = None
    for name, value in kwargs.items():
        if not isinstance(value, _Inside):
            continue
        if name == "monkeypatch":
            mp = pytest.MonkeyPatch()
            made.append(mp.undo)
            kwargs[name] = mp
            continue
        if name == "caplog":
            kwargs[name] = _caplog(made)
            continue
        if name in ("capsys", "capsysbinary"):
            kind = SysCapture if name == "capsys" else SysCaptureBinary
            capture: Any = CaptureFixture(kind, None, _ispytest=True)  # type: ignore[arg-type]
            capture._start()
            made.append(capture.close)
            kwargs[name] = capture
            continue
        if factory is None:
            factory = TempPathFactory(
                None, 3, "all", lambda *a: None, basetemp=None, _ispytest=True
            )
            factory._basetemp = __import__("pathlib").Path(spec["basetemp"])
        kwargs[name] = (
            factory if name == "tmp_path_factory" else TempdirFactory(factory, _ispytest=True)
        )
    return kwargs


class _Node:
    """What pytest's LogCaptureFixture needs of its test item: a stash."""

    def __init__(self) -> None:
        from _pytest.stash import Stash

        self.stash = Stash()


def _caplog(made: list[Any]) -> Any:
    """pytest's ``caplog``, capturing the records logged in this worker."""
    import logging

    from _pytest.logging import (
        LogCaptureFixture,
        LogCaptureHandler,
        caplog_handler_key,
        caplog_records_key,
    )

    node = _Node()
    handler = LogCaptureHandler()
    node.stash[caplog_handler_key] = handler
    node.stash[caplog_records_key] = {"call": handler.records}
    root = logging.getLogger()
    root.addHandler(handler)
    fixture = LogCaptureFixture(node, _ispytest=True)  # type: ignore[arg-type]

    def done() -> None:
        fixture._finalize()
        root.removeHandler(handler)

    made.append(done)
    return fixture


def _longrepr(e: BaseException, spec: dict[str, Any], fn: Any) -> Any:
    """pytest's report of ``e``, as its plain-data form (what pytest-xdist sends too)."""
    from pathlib import Path

    from _pytest._code import Code, ExceptionInfo
    from _pytest._code.code import Traceback, filter_traceback
    from _pytest.reports import TestReport

    excinfo = ExceptionInfo.from_exception(e)
    code = Code.from_function(inspect.unwrap(fn))
    tbstyle = spec["tbstyle"]

    def tbfilter(info: ExceptionInfo[BaseException]) -> Traceback:
        traceback = info.traceback
        cut = traceback.cut(path=code.path, firstlineno=code.firstlineno)
        if cut == traceback:
            cut = cut.cut(path=code.path)
            if cut == traceback:
                cut = cut.filter(filter_traceback)
                if not cut:
                    cut = traceback
        cut = cut.filter(info)
        if tbstyle == "auto" and len(cut) > 2:
            cut = Traceback((cut[0], *(t.with_repr_style("short") for t in cut[1:-1]), cut[-1]))
        return cut

    filt: bool | Callable[[ExceptionInfo[BaseException]], Traceback]
    style: Any = tbstyle
    if isinstance(e, pytest.fail.Exception) and not e.pytrace:
        style = "value"
    if spec["fulltrace"]:
        style, filt = "long", False
    else:
        filt = tbfilter
        if style == "auto":
            style = "long"
    if style not in ("long", "short", "line", "no", "native", "value"):
        style = "long"
    try:
        abspath = Path(os.getcwd()) != Path(spec["invocation_dir"])
    except OSError:
        abspath = True
    rep = excinfo.getrepr(
        funcargs=True,
        abspath=abspath,
        showlocals=spec["showlocals"],
        style=style,
        tbfilter=filt,
        truncate_locals=spec["verbosity"] <= 1,
        truncate_args=spec["verbosity"] <= 2,
    )
    rep.addsection("sandbox", f"the test ran inside {spec['where']}")
    report = TestReport("", ("", 0, ""), {}, "failed", rep, "call")
    return report._to_json()


def run_test(spec: dict[str, Any]) -> tuple[Any, ...]:
    """Run one test in this (fresh) worker; its outcome as plain data."""
    from sandboxed.wire import serial

    made: list[Any] = []
    fn: Any = None
    try:
        _environment(spec["env"], spec["keep_env"])
        # Not reachable for the sandbox's user: the test stays in the unit's own directory.
        with contextlib.suppress(OSError):
            os.chdir(spec["cwd"])
        obj: Any = _load(spec["path"], spec["module"])
        parts = spec["qualname"].split(".")
        for part in parts[:-1]:
            obj = getattr(obj, part)
        if spec["is_method"]:
            obj = obj()  # pytest makes a fresh instance for each test, too
        fn = getattr(obj, parts[-1])
        kwargs = _fixtures(spec, made)
        if spec["async"] == "asyncio":
            import asyncio

            asyncio.run(fn(**kwargs))
        elif spec["async"] == "anyio":
            import anyio

            backend = spec["anyio_backend"]
            name, opts = (backend, {}) if isinstance(backend, str) else backend
            anyio.run(functools.partial(fn, **kwargs), backend=name, backend_options=opts)
        else:
            fn(**kwargs)
    except pytest.skip.Exception as e:
        return ("skipped", e.msg)
    except pytest.xfail.Exception as e:
        return ("xfailed", e.msg)
    except BaseException as e:
        longrepr = _longrepr(e, spec, fn if fn is not None else run_test)
        return (
            "failed",
            longrepr,
            [bytes(p) for p in serial.dumps_exception(e, safe=spec["safe"])],
        )
    finally:
        for undo in reversed(made):
            undo()
    return ("passed",)
