"""The jeepney client against the real manager: start, wait, read back, stop, nothing left."""

from __future__ import annotations

import os
import secrets
import time

import pytest

from sandboxed import DirectiveRejectedError, ManagerNotFoundError, UnitFailedError
from sandboxed.systemd import locate
from sandboxed.systemd.bus import ManagerClient, unit_object_path


def _unit(prefix: str = "sandboxed-bustest") -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}.service"


def _sleep_props(seconds: int = 60) -> list[tuple[str, str, object]]:
    return [
        ("Description", "s", "sandboxed bus test"),
        ("ExecStart", "a(sasb)", [("/bin/sleep", ["/bin/sleep", str(seconds)], False)]),
        ("CollectMode", "s", "inactive-or-failed"),
    ]


def _loaded(client: ManagerClient, name: str) -> bool:
    return name in {u[0] for u in client.list_units()}


def test_start_wait_read_back_and_stop_a_transient_unit_leaves_nothing(
    client: ManagerClient,
) -> None:
    name = _unit()
    assert client.start_transient_unit(name, _sleep_props()) == "done"
    props = client.get_unit_properties(name)
    assert props["Id"] == name
    assert props["ActiveState"] == "active"
    assert props["Description"] == "sandboxed bus test"
    svc = client.get_unit_properties(name, "org.freedesktop.systemd1.Service")
    assert svc["MainPID"] > 0
    assert svc["ExecStart"][0][0] == "/bin/sleep"
    assert client.stop_unit(name) == "done"
    deadline = time.monotonic() + 5
    while _loaded(client, name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _loaded(client, name)


def test_many_threads_share_one_connection(client: ManagerClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        versions = list(
            pool.map(
                lambda _: client.get_property(
                    "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Version"
                ),
                range(64),
            )
        )
    assert len(set(versions)) == 1 and versions[0] == client.version


def test_a_property_the_manager_refuses_names_the_directive_and_the_version(
    client: ManagerClient,
) -> None:
    props = [*_sleep_props(), ("CPUQuotaPerSecUSec", "s", "not-a-number")]
    with pytest.raises(DirectiveRejectedError) as info:
        client.start_transient_unit(_unit(), props)
    assert info.value.directive is not None and info.value.directive.startswith("CPUQuota")
    assert info.value.systemd_version == client.version
    assert client.version in str(info.value)


def test_a_unit_whose_program_cannot_start_fails_its_job(client: ManagerClient) -> None:
    name = _unit()
    props = [
        ("Type", "s", "exec"),
        ("ExecStart", "a(sasb)", [("/nonexistent/program", ["/nonexistent/program"], False)]),
        ("CollectMode", "s", "inactive-or-failed"),
    ]
    with pytest.raises(UnitFailedError) as info:
        client.start_transient_unit(name, props)
    assert info.value.unit == name
    assert info.value.result == "failed"


def test_unit_object_paths_are_escaped_as_systemd_does() -> None:
    assert unit_object_path("sandboxed-ab_1.service") == (
        "/org/freedesktop/systemd1/unit/sandboxed_2dab_5f1_2eservice"
    )


def test_the_manager_is_found_explicit_address_first_then_environment(
    monkeypatch: pytest.MonkeyPatch, systemd: object
) -> None:
    assert locate.locate("unix:path=/some/where").kind == "explicit"
    assert locate.locate("/some/socket").address == "unix:path=/some/socket"
    monkeypatch.setenv(locate.ENV_ADDRESS, "unix:path=/from/env")
    found = locate.locate()
    assert (found.kind, found.address) == ("environment", "unix:path=/from/env")


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="PID 1 is systemd here")
def test_with_autostart_turned_off_and_no_manager_the_error_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv(locate.ENV_ADDRESS, raising=False)
    monkeypatch.setenv("SANDBOXED_EMBEDDED_DIR", str(tmp_path))
    monkeypatch.setenv(locate.ENV_EMBEDDED, "0")
    with pytest.raises(ManagerNotFoundError) as info:
        locate.locate()
    assert "SANDBOXED_EMBEDDED=0" in str(info.value)
    assert "embedded start" in str(info.value)
