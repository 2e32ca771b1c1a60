"""The exposure score of a live sandbox, from the API and the CLI; Hardened scores <= 2.0."""

from __future__ import annotations

import json
from typing import Any

import pytest
from escape_kit import in_sandbox

from sandboxed import Hardened, ManagerError, security_report
from sandboxed.cli.main import main
from sandboxed.systemd.security import SecurityItem, parse_report

pytestmark = pytest.mark.systemd

HARDENED = in_sandbox(Hardened)
PLAIN = in_sandbox()
BARE = in_sandbox(containment=False)


def test_hardened_scores_at_most_2_0() -> None:
    HARDENED(int)  # a live unit, as used
    report = security_report(HARDENED)
    assert report.score <= 2.0, report.text
    assert report.rating in ("SAFE", "OK")
    # What keeps it from 0: nothing that the table in _presets.py does not explain.
    assert {i.name for i in report.exposed} <= {
        "RootDirectory=/RootImage=",
        "DeviceAllow=",
        "ProtectHome=",
        "MemoryDenyWriteExecute=",
        "RestrictAddressFamilies=~AF_UNIX",
    }


def test_the_report_reads_every_setting_of_the_live_unit() -> None:
    report = security_report(HARDENED.sandbox)
    assert report.unit == HARDENED.sandbox.unit_name
    assert len(report.items) > 50
    assert report.item("PrivateNetwork=") == SecurityItem(
        "PrivateNetwork=", True, "Service has no access to the host's network", None
    )
    assert security_report(report.unit).score == report.score  # by unit name, too


def test_a_sandbox_with_no_options_scores_worse_than_hardened() -> None:
    # The containment baseline alone (measured: 4.7 OK on systemd 252).
    plain = security_report(PLAIN)
    assert security_report(HARDENED).score < plain.score < security_report(BARE).score
    assert plain.item("PrivateUsers=").ok is True  # type: ignore[union-attr]
    assert plain.item("ProtectControlGroups=").ok is True  # type: ignore[union-attr]


def test_an_unrestricted_sandbox_scores_far_worse() -> None:
    report = security_report(BARE)
    assert report.score > 5.0
    assert report.item("PrivateNetwork=") is not None
    assert report.item("PrivateNetwork=").ok is False  # type: ignore[union-attr]


def test_an_unknown_unit_is_a_manager_error() -> None:
    with pytest.raises(ManagerError, match="not found"):
        security_report("sandboxed-no-such-unit.service")


def test_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="a sandboxed function, a Sandbox or a unit name"):
        security_report(42)


ASCII = """\
  NAME                       DESCRIPTION                                    EXPOSURE
  PrivateTmp=                Service runs in special boot phase, option is not appropriate
- User=/DynamicUser=         Service runs as root user                           0.4
+ AmbientCapabilities=       Service process does not receive ambient capabilities
- CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER) Service may override permission checks 0.2

-> Overall exposure level for x.service: 9.5 UNSAFE :-{
"""


def test_parse_report_reads_ascii_marks_and_rows_without_one() -> None:
    report = parse_report(ASCII)
    assert (report.unit, report.score, report.rating) == ("x.service", 9.5, "UNSAFE")
    assert [(i.name, i.ok, i.exposure) for i in report.items] == [
        ("PrivateTmp=", None, None),
        ("User=/DynamicUser=", False, 0.4),
        ("AmbientCapabilities=", True, None),
        ("CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)", False, 0.2),
    ]
    assert report.items[3].description == "Service may override permission checks"
    assert report.items[0].description == (
        "Service runs in special boot phase, option is not appropriate"
    )


def test_parse_report_refuses_text_without_a_score() -> None:
    with pytest.raises(ValueError, match="no overall exposure"):
        parse_report("Unit x.service not found, cannot analyze.\n")


def test_the_cli_reports_a_live_unit(capsys: Any) -> None:
    HARDENED(int)
    unit = HARDENED.sandbox.unit_name
    assert main(["security", unit]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{unit}: exposure 0.") and first.endswith(("SAFE", "OK"))
    assert main(["security", "--json", unit]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["score"] <= 2.0 and data["unit"] == unit
    assert {"name", "ok", "description", "exposure"} <= set(data["items"][0])


def test_the_cli_assesses_presets_and_fails_above_a_threshold(capsys: Any) -> None:
    assert main(["security", "--preset", "Hardened", "--threshold", "2.0"]) == 0
    assert "SAFE" in capsys.readouterr().out or "OK" in capsys.readouterr().out
    assert main(["security", "--preset", "NoNetwork", "--threshold", "2.0"]) == 1
    assert "PrivateNetwork=" not in capsys.readouterr().out  # NoNetwork's is not exposed
