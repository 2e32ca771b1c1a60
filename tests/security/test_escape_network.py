"""NoNetwork (PrivateNetwork=, RestrictAddressFamilies=AF_UNIX) against code that wants out.

Every bait listens on the host's loopback; each attack is first shown to work
from the test process itself, so that a refusal inside the sandbox means the
sandbox refused it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from escape_kit import DNS_ADDRESS, OK, attempt, dns_query, in_sandbox

from sandboxed import Hardened, NoNetwork

pytestmark = pytest.mark.systemd

NO_NETWORK = in_sandbox(NoNetwork)
HARDENED = in_sandbox(Hardened)
#: The namespace alone, without the address-family filter: proves the second layer.
NAMESPACE_ONLY = in_sandbox(PrivateNetwork=True)

SANDBOXES = pytest.mark.parametrize(
    "box", [NO_NETWORK, HARDENED, NAMESPACE_ONLY], ids=["NoNetwork", "Hardened", "PrivateNetwork"]
)
FILTERED = pytest.mark.parametrize("box", [NO_NETWORK, HARDENED], ids=["NoNetwork", "Hardened"])


def tcp_exchange(address: tuple[str, int]) -> str:
    def go() -> None:
        with socket.create_connection(address, timeout=2) as s:
            s.sendall(b"escaped")
            if not s.recv(64):
                raise ConnectionError("no answer")

    return attempt(go)


def udp_exchange(address: tuple[str, int], payload: bytes = b"escaped") -> str:
    def go() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(payload, address)
            s.recvfrom(512)

    return attempt(go)


def resolve(name: str) -> str:
    return attempt(lambda: socket.getaddrinfo(name, 80))


def abstract_exchange(name: bytes) -> str:
    def go() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(name)
            s.sendall(b"escaped")
            if not s.recv(64):
                raise ConnectionError("no answer")

    return attempt(go)


def open_socket(family: str, kind: str, proto: int = 0) -> str:
    return attempt(
        lambda: socket.socket(getattr(socket, family), getattr(socket, kind), proto).close()
    )


def interfaces() -> list[str]:
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def test_the_baits_answer_outside_a_sandbox(
    tcp_bait: Any, udp_bait: Any, abstract_bait: Any
) -> None:
    assert tcp_exchange(tcp_bait.address) == OK
    assert udp_exchange(udp_bait.address) == OK
    assert abstract_exchange(abstract_bait.address) == OK


@SANDBOXES
def test_no_tcp_connection_reaches_the_hosts_loopback(box: Any, tcp_bait: Any) -> None:
    before = len(tcp_bait.hits)
    outcome = box(tcp_exchange, tcp_bait.address)
    assert outcome != OK
    assert len(tcp_bait.hits) == before


@SANDBOXES
def test_no_udp_datagram_reaches_the_hosts_loopback(box: Any, udp_bait: Any) -> None:
    before = len(udp_bait.hits)
    outcome = box(udp_exchange, udp_bait.address)
    assert outcome != OK
    assert len(udp_bait.hits) == before


@SANDBOXES
def test_no_abstract_unix_socket_of_the_host_is_reachable(box: Any, abstract_bait: Any) -> None:
    before = len(abstract_bait.hits)
    outcome = box(abstract_exchange, abstract_bait.address)
    assert outcome == "ConnectionRefusedError ECONNREFUSED"
    assert len(abstract_bait.hits) == before


@FILTERED
@pytest.mark.parametrize(
    ("family", "kind", "proto"),
    [
        ("AF_INET", "SOCK_STREAM", 0),
        ("AF_INET", "SOCK_DGRAM", 0),
        ("AF_INET6", "SOCK_STREAM", 0),
        ("AF_INET", "SOCK_RAW", socket.IPPROTO_ICMP),
        ("AF_INET", "SOCK_RAW", socket.IPPROTO_RAW),
        ("AF_PACKET", "SOCK_RAW", 0x0300),  # ETH_P_ALL, network byte order
        ("AF_PACKET", "SOCK_DGRAM", 0x0008),  # ETH_P_IP
        ("AF_NETLINK", "SOCK_RAW", 0),
    ],
    ids=lambda v: str(v),
)
def test_no_ip_raw_packet_or_netlink_socket_can_be_created(
    box: Any, family: str, kind: str, proto: int
) -> None:
    assert box(open_socket, family, kind, proto) == "OSError EAFNOSUPPORT"


@SANDBOXES
def test_the_only_network_interface_is_its_own_loopback(box: Any) -> None:
    assert box(interfaces) == ["lo"]
    assert interfaces() != ["lo"]  # the host has more: the probe tells the two apart


@pytest.fixture(scope="module")
def resolving_boxes(dns_bait: Any) -> dict[str, Any]:
    """Sandboxes whose /etc/resolv.conf names only the loopback fake DNS server, so that
    one that leaked could only ever reach that server, never a real one."""
    _bait, conf = dns_bait
    bind = f"{conf}:/etc/resolv.conf"
    return {
        "NoNetwork": in_sandbox(NoNetwork, BindReadOnlyPaths=bind),
        "Hardened": in_sandbox(Hardened, BindReadOnlyPaths=bind),
        "PrivateNetwork": in_sandbox(PrivateNetwork=True, BindReadOnlyPaths=bind),
        "unrestricted": in_sandbox(BindReadOnlyPaths=bind),
    }


def resolver_config() -> str:
    return Path("/etc/resolv.conf").read_text()


def test_a_sandbox_with_network_would_send_its_query_to_the_fake_server(
    resolving_boxes: dict[str, Any], dns_bait: Any
) -> None:
    bait, _conf = dns_bait
    before = len(bait.hits)
    resolving_boxes["unrestricted"](resolve, "sandboxed-control-probe.invalid")
    assert len(bait.hits) > before


@pytest.mark.parametrize("which", ["NoNetwork", "Hardened", "PrivateNetwork"])
def test_no_name_resolves_and_no_query_leaves(
    resolving_boxes: dict[str, Any], dns_bait: Any, which: str
) -> None:
    bait, _conf = dns_bait
    before = len(bait.hits)
    box = resolving_boxes[which]
    assert DNS_ADDRESS in box(resolver_config)
    assert box(resolve, "sandboxed-escape-probe.invalid").startswith("gaierror")
    assert box(udp_exchange, bait.address, dns_query("direct.invalid")) != OK
    assert len(bait.hits) == before
