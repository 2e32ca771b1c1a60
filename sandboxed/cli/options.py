"""What the commands share: the command record and the sandbox options (--preset, -p)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sandboxed._errors import ConfigurationError


class Command(NamedTuple):
    """One subcommand: its help line, how it adds its arguments, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_sandbox_options(p: argparse.ArgumentParser, verb: str) -> None:
    """``--preset NAME`` and ``-p Directive=value``, both repeatable."""
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a preset of the sandbox to {verb}, by name: Hardened, NoNetwork, ReadOnly, "
        "CPU(20%%), AsUser(nobody)... (repeatable)",
    )
    p.add_argument(
        "-p",
        "--property",
        action="append",
        default=[],
        metavar="Directive=value",
        help="a systemd directive as in a unit file, e.g. -p CPUQuota=20%% (repeatable; "
        "overrides the presets)",
    )


def build_options(
    presets: Sequence[str],
    properties: Sequence[str],
    setenv: Sequence[str] = (),
    timeout: float | None = None,
    untrusted: bool = False,
    same_dir: bool = False,
    code_dir: str | None = None,
    raw_output: bool = False,
) -> Any:
    """The OptionSet of ``run``'s command line; raises configuration errors.

    ``code_dir`` is where the code to run lives: under ``PrivateTmp=`` a
    private /tmp would hide it, so a ``code_dir`` in /tmp or /var/tmp is bound
    read-only into the sandbox (exactly that directory, for reading only).
    ``raw_output`` writes the sandbox's output to a terminal without escaping it.
    """
    from sandboxed.directives.directive import Directive
    from sandboxed.directives.options import OptionSet
    from sandboxed.directives.presets import preset_by_name

    chosen = [preset_by_name(p) for p in presets]
    merged: dict[str, Directive] = {}
    for text in properties:
        if "=" not in text:
            raise ConfigurationError(
                f"invalid property {text!r}; accepted: Directive=value, e.g. CPUQuota=20%"
            )
        d = Directive.parse(text)
        # Repeated list-valued directives accumulate, as in a unit file.
        merged[d.name] = merged[d.name].merge(d) if d.name in merged else d
    if same_dir and "WorkingDirectory" not in merged:
        merged["WorkingDirectory"] = Directive.of("WorkingDirectory", os.getcwd())
    env: dict[str, str] = {}
    for item in setenv:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                raise ConfigurationError(f"-E {name}: no such variable in this environment")
            value = os.environ[name]
        env[name] = value
    extra: dict[str, Any] = {}
    if timeout is not None:
        extra["timeout"] = timeout
    if untrusted:
        extra["trusted"] = False
    if raw_output:
        extra["raw_output"] = True
    directives: dict[str, Any] = {n: d.value for n, d in merged.items()}
    options = OptionSet.build(*chosen, env=env or None, **extra, **directives)
    if code_dir is None:
        return options
    from sandboxed.runtime.plan import bind_code_dir

    return bind_code_dir(options, code_dir)
