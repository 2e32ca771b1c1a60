"""Prove that a function uses no network, with the pytest plugin.

``@pytest.mark.sandboxed(NoNetwork)`` runs the test's body in a sandbox with
an empty network namespace and no IP sockets at all. If the code under test
opened a connection (an accidental telemetry call, a lazy download, a DNS
lookup), the test would fail — so a passing test is evidence that this code
path needs no network. The plugin ships with sandboxed (no configuration);
fixtures are resolved as usual and passed in, asserts read as usual.

Run: python -m pytest recipes/test_no_network.py
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from sandboxed import NoNetwork, ReadOnly


def normalise_prices(raw: str) -> dict[str, float]:
    """The code under test: pure computation, which must work offline."""
    data = json.loads(raw)
    return {k.upper(): round(float(v), 2) for k, v in data.items()}


def fetch_prices(url: str) -> str:
    """Code that does use the network: it must fail under NoNetwork."""
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


@pytest.fixture
def raw_prices() -> str:
    return '{"eur": "1.0", "usd": "1.0837", "gbp": 0.8551}'


@pytest.mark.sandboxed(NoNetwork)
def test_normalise_prices_works_without_network(raw_prices: str) -> None:
    assert normalise_prices(raw_prices) == {"EUR": 1.0, "USD": 1.08, "GBP": 0.86}


@pytest.mark.sandboxed(NoNetwork)
def test_fetching_prices_needs_the_network_so_it_fails_here() -> None:
    with pytest.raises(OSError):
        fetch_prices("http://192.0.2.1/prices.json")


@pytest.mark.sandboxed(NoNetwork)
def test_not_even_name_resolution_is_possible() -> None:
    with pytest.raises(OSError):
        socket.getaddrinfo("example.org", 443)


@pytest.mark.sandboxed(NoNetwork, ReadOnly)
def test_results_can_be_written_only_to_tmp_path_and_the_private_tmp(tmp_path: Path) -> None:
    # ReadOnly: the system is read-only and /tmp is private; the test's own tmp_path
    # is bound into the sandbox read-write, so pytest sees what the test wrote there.
    (tmp_path / "report.json").write_text(json.dumps({"ok": True}))
    Path("/tmp/scratch.json").write_text("{}")
    with pytest.raises(OSError):
        Path("/etc/report.json").write_text("{}")
