"""Our directive conversion equals systemd-run's, as the manager itself sees it.

For every corpus entry (differential_corpus.py) one unit is started with the
properties :class:`Directive` produces and one with ``systemd-run -p
NAME=VALUE``; ``systemctl show`` must print the same for every bus property
the directive can set. Both units run ``/bin/true`` with
``RemainAfterExit=yes``; a unit that fails to run (a missing RootImage=...)
stays loaded as failed, which is enough for the comparison. Every unit is
stopped and its failure state reset.

A corpus entry newer than the systemd under test (``Directive.needs``) is not
compared: there systemd-run must reject it and sandboxed must refuse it when the
sandbox is built, naming the directive, the version it needs and the one running.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxed._errors import UnenforceableDirectiveError, UnitFailedError
from sandboxed.directives.directive import DIRECTIVES, Directive
from sandboxed.directives.facts import HostFacts
from sandboxed.directives.host import refuse
from sandboxed.systemd.bus import SERVICE_IFACE, UNIT_IFACE

sys.path.insert(0, str(Path(__file__).parent))
from differential_corpus import CORPUS, NOT_OBSERVABLE, NOT_TESTED, REFERENCE_SPELLING

pytestmark = pytest.mark.systemd

_BASE = [
    ("ExecStart", "a(sasb)", [("/bin/true", ["/bin/true"], False)]),
    ("RemainAfterExit", "b", True),
]


def _case_id(case: tuple[Any, ...]) -> str:
    name, text = case[0], case[1]
    return f"{name}={text}" + (f"<-{case[2]!r}" if len(case) == 3 else "")


_SHOWN_AS = {
    # Deprecated spellings are stored in (and shown as) the current ones.
    "ReadWriteDirectories": "ReadWritePaths",
    "ReadOnlyDirectories": "ReadOnlyPaths",
    "InaccessibleDirectories": "InaccessiblePaths",
}


def _readable(bus_name: str) -> str:
    # MemoryMaxScale= and friends are write-only; the manager shows the result as MemoryMax=.
    return _SHOWN_AS.get(bus_name, bus_name.removesuffix("Scale"))


def _shown_properties(name: str, version: int) -> list[str]:
    if name in NOT_OBSERVABLE:
        return []
    return sorted({_readable(b) for b in DIRECTIVES[name].bus_names_at(version)})


def _reference(name: str, text: str, directive: Directive) -> str:
    """The ``systemd-run -p`` assignment: named values of a boolean go to its …Ex form."""
    if name in REFERENCE_SPELLING and isinstance(directive.value, str):
        return f"{REFERENCE_SPELLING[name]}={text}"
    return f"{name}={text}"


def _tool(systemd: Any, argv: list[str]) -> list[str]:
    # systemd's tools check their executable through /proc/self, which must be the
    # manager's own /proc when it lives in its own PID namespace.
    argv = list(systemd.tool(argv)) if hasattr(systemd, "tool") else argv
    if argv and argv[0] == "nsenter" and not any(a.startswith("--pid") for a in argv):
        mount = next(a for a in argv if a.startswith("--mount="))
        pid_ns = mount.replace("--mount=", "--pid=").replace("/ns/mnt", "/ns/pid")
        argv.insert(1, pid_ns)
        argv.insert(2, "--wd=/")
    return argv


def _observe(systemd: Any, client: Any, unit: str, props: list[str]) -> dict[str, Any]:
    """What ``systemctl show`` prints and what D-Bus returns for each of ``props``."""
    if not props:
        return {}
    bus: dict[str, Any] = {}
    for iface in (SERVICE_IFACE, UNIT_IFACE):
        # A unit that failed to load has no Service interface.
        with contextlib.suppress(Exception):
            bus.update(client.get_unit_properties(unit, iface))
    shown = _show(systemd, unit, props)
    return {p: (shown[p], bus.get(p, "<not on the bus>")) for p in props}


def _show(systemd: Any, unit: str, props: list[str]) -> dict[str, str]:
    import subprocess

    run = subprocess.run(
        _tool(systemd, ["systemctl", "show", "-p", ",".join(props), unit]),
        env=systemd.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode != 0:
        return {p: f"<systemctl show failed: {run.stderr.strip()}>" for p in props}
    shown = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
    return {p: shown.get(p, "<not shown>") for p in props}


Outcome = dict[str, Any]


def _stop(client: Any, unit: str) -> None:
    for method in (client.stop_unit, client.reset_failed_unit):
        # A unit that never loaded has nothing to stop or reset.
        with contextlib.suppress(Exception):
            method(unit)


def _start_ours(client: Any, unit: str, properties: list[Any]) -> str:
    try:
        client.start_transient_unit(unit, [*_BASE, *properties])
    except UnitFailedError:
        return "started, then failed"
    except Exception as exc:
        return f"rejected: {exc}"
    return "started"


def _start_ref(systemd: Any, unit: str, assignment: str) -> str:
    import subprocess

    run = subprocess.run(
        _tool(
            systemd,
            [
                "systemd-run",
                "--quiet",
                "--unit",
                unit,
                "--remain-after-exit",
                "-p",
                assignment,
                "/bin/true",
            ],
        ),
        env=systemd.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode == 0:
        return "started"
    if (
        "Failed to start transient" in run.stderr
        or "Failed to parse" in run.stderr
        or ("Unknown assignment" in run.stderr)
    ):
        return f"rejected: {run.stderr.strip()}"
    return "started, then failed"


@pytest.fixture(scope="module")
def outcomes(systemd: Any) -> Iterator[dict[str, Outcome]]:
    client = systemd.client()
    running = client.version_number
    results: dict[str, Outcome] = {}
    for i, case in enumerate(CORPUS):
        name, text = case[0], case[1]
        value = case[2] if len(case) == 3 else text
        directive = Directive.of(name, value)
        shown = _shown_properties(name, running)
        ours, ref = f"sbx-diff-{i:03d}-ours.service", f"sbx-diff-{i:03d}-ref.service"
        if directive.needs > running:
            # Too new for this systemd: only the reference is tried (it must fail).
            try:
                ref_status = _start_ref(systemd, ref, _reference(name, text, directive))
            finally:
                _stop(client, ref)
            results[_case_id(case)] = {
                "needs": directive.needs,
                "running": running,
                "ref_status": ref_status,
            }
            continue
        # One unit at a time: two units may not share a BusName=, for one.
        try:
            ours_status = _start_ours(client, ours, directive.properties())
            # Read back at once: a unit may stop itself later (RuntimeMaxSec=...).
            ours_shown = _observe(systemd, client, ours, shown)
        finally:
            _stop(client, ours)
        try:
            ref_status = _start_ref(systemd, ref, _reference(name, text, directive))
            ref_shown = _observe(systemd, client, ref, shown)
        finally:
            _stop(client, ref)
        results[_case_id(case)] = {
            "ours_status": ours_status,
            "ref_status": ref_status,
            "ours": ours_shown,
            "ref": ref_shown,
        }
    yield results


@pytest.mark.parametrize("case", CORPUS, ids=[_case_id(c) for c in CORPUS])
def test_our_properties_match_systemd_run(outcomes: dict[str, Outcome], case: Any) -> None:
    outcome = outcomes[_case_id(case)]
    if "needs" in outcome:
        # Older than the directive: systemd refuses it, and sandboxed refuses the sandbox.
        assert outcome["ref_status"].startswith("rejected"), outcome["ref_status"]
        directive = Directive.of(case[0], case[2] if len(case) == 3 else case[1])
        with pytest.raises(UnenforceableDirectiveError) as refused:
            refuse([directive], HostFacts(outcome["running"]))
        assert refused.value.directive == case[0]
        assert (refused.value.needed, refused.value.running) == (
            outcome["needs"],
            outcome["running"],
        )
        assert f"needs systemd {outcome['needs']}" in str(refused.value)
        return
    assert not outcome["ref_status"].startswith("rejected"), outcome["ref_status"]
    assert not outcome["ours_status"].startswith("rejected"), outcome["ours_status"]
    # Both units must get as far: loaded and started, or loaded and then failed to run.
    assert outcome["ours_status"] == outcome["ref_status"]
    assert outcome["ours"] == outcome["ref"]
    if case[0] not in NOT_OBSERVABLE:
        assert outcome["ours"], "nothing was compared"
        for prop, (text, value) in outcome["ours"].items():
            assert text != "<not shown>" or value != "<not on the bus>", f"{prop} is not observable"


def test_corpus_is_large_and_covers_the_table() -> None:
    names = {c[0] for c in CORPUS}
    assert len(CORPUS) >= 150
    assert len(names) >= 120
    accepted = {n for n, spec in DIRECTIVES.items() if not spec.reserved}
    untested = accepted - names
    assert untested == set(NOT_TESTED), "every untested directive needs a reason in NOT_TESTED"
    assert not names - accepted, "the corpus names directives the table lacks or refuses"
