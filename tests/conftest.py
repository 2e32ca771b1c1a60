"""Shared fixtures: a real systemd for the whole test session.

``systemd`` provides the host's manager when PID 1 is systemd, otherwise the
embedded one (started here if none runs, and stopped at the end of the run).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from sandboxed.systemd import embedded, locate
from sandboxed.systemd.bus import ManagerClient


class SystemdUnderTest:
    """The manager the tests talk to.

    ``address``: its D-Bus address; ``location``: the :class:`ManagerLocation`;
    ``tool(argv)``: the argv to run one of systemd's tools (systemctl,
    systemd-run, systemd-analyze) against it; ``env``: environment for them.
    """

    def __init__(self, location: locate.ManagerLocation, started_here: bool) -> None:
        self.location = location
        self.address = location.address
        self.started_here = started_here
        self.env = dict(os.environ)
        self._clients: list[ManagerClient] = []

    def tool(self, argv: list[str]) -> list[str]:
        return [*self.location.tool_prefix, *argv]

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        return subprocess.run(self.tool(argv), env=self.env, **kw)

    def client(self) -> ManagerClient:
        c = ManagerClient(self.address)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()


@pytest.fixture(scope="session")
def systemd() -> Iterator[SystemdUnderTest]:
    started_here = False
    if not locate.host_systemd_running() and not os.environ.get(locate.ENV_ADDRESS):
        started_here = embedded.status() is None
    location = locate.current()
    if os.environ.get("SANDBOXED_EXPECT_HOST_PATH"):
        # The host-path pass (scripts/host_path.py): this run is worth nothing if it
        # does not take the path of a machine whose PID 1 is systemd.
        assert location.kind == "host", f"expected the host path, got {location}"
        assert location.address == "unix:path=/run/systemd/private", location
    sut = SystemdUnderTest(location, started_here)
    yield sut
    sut.close()
    from sandboxed.runtime import registry

    registry.shutdown()
    if started_here:
        # The session's own manager: its callers are this session and its children.
        embedded.stop(force=True)


@pytest.fixture
def client(systemd: SystemdUnderTest) -> Iterator[ManagerClient]:
    c = systemd.client()
    yield c
    c.close()
