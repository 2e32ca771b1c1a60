"""Value kinds of systemd.resource-control(5) directives with a syntax of their own.

Each follows the matching branch of ``bus_append_cgroup_property()`` in
systemd 252's ``src/shared/bus-unit-util.c``.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

from sandboxed.directives.kinds import Kind, Property, entries, scalar, strv
from sandboxed.directives.values import (
    INFINITY,
    UINT64_MAX,
    Invalid,
    cpu_set_to_bytes,
    format_cpu_set,
    format_size,
    format_timespan,
    parse_boolean,
    parse_cpu_set,
    parse_int,
    parse_size,
    parse_string,
    parse_timespan,
    parse_words,
)

# -- weights --------------------------------------------------------------------------------


def _cpu_weight(value: object) -> Hashable:
    if value == "idle":
        return 0
    return parse_int(value, 0, 10000)


CPU_WEIGHT = scalar(
    "t",
    "a weight from 1 to 10000 (int or str), or 'idle' (0)",
    _cpu_weight,
    lambda v: "idle" if v == 0 else str(v),
)

# -- CPU and memory-node sets ---------------------------------------------------------------

CPU_SET = Kind(
    "ay",
    "CPU or NUMA node numbers: '0-3 8', '0,1', or a list of ints; '' for none",
    parse_cpu_set,
    lambda bus, v: [(bus, "ay", cpu_set_to_bytes(v))],
    lambda v: [format_cpu_set(v)],
)

# -- Delegate= ------------------------------------------------------------------------------

_CONTROLLER = r"cpu|cpuacct|cpuset|io|blkio|memory|devices|pids|bpf-[a-z-]+"


def _delegate(value: object) -> Hashable:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_boolean(value)
        except Invalid:
            pass
    words = parse_words(value)
    for word in words:
        if not re.fullmatch(_CONTROLLER, word):
            raise Invalid(f"unknown controller {word!r}")
    return words


def _delegate_emit(bus: str, value: Any) -> list[Property]:
    if isinstance(value, bool):
        return [("Delegate", "b", value)]
    return [("DelegateControllers", "as", list(value))]


DELEGATE = Kind(
    "b",
    "a boolean, or the cgroup controllers to delegate: 'cpu memory' or a list",
    _delegate,
    _delegate_emit,
    lambda v: [("yes" if v else "no") if isinstance(v, bool) else " ".join(v)],
    extra=lambda bus: ("DelegateControllers",),
)

CONTROLLERS = strv(item=_CONTROLLER, what="cgroup controller names")

# -- per-device settings: "PATH VALUE" entries ----------------------------------------------


def _split_device(text: str, what: str) -> tuple[str, str]:
    path, sep, rest = text.strip().partition(" ")
    if not sep or not rest.strip():
        raise Invalid(f"expected 'PATH {what}'")
    return path, rest.strip()


def _device_entry(value: object) -> tuple[str, str]:
    if isinstance(value, tuple) and len(value) == 2:
        path, perms = parse_string(value[0]), str(value[1])
    else:
        text = parse_string(value)
        path, _, perms = text.partition(" ")
    if not re.fullmatch(r"[rwm]*", perms):
        raise Invalid(f"bad access {perms!r}: use a combination of r, w, m")
    if not path:
        raise Invalid("missing device path")
    return path, perms


DEVICE_ALLOW = entries(
    _device_entry,
    "a(ss)",
    lambda e: e,
    lambda e: f"{e[0]} {e[1]}".rstrip(),
    "a device and access: '/dev/null rw', 'char-pts rwm', or a (path, 'rw') tuple",
    tuple_entries=True,
)


def _bandwidth_entry(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) == 2:
        path, amount = parse_string(value[0]), value[1]
    else:
        path, amount = _split_device(parse_string(value), "BYTES")
    if amount == "infinity":
        return path, INFINITY
    return path, parse_size(amount, 1000)


def _fmt_si(n: int) -> str:
    if n == INFINITY:
        return "infinity"
    for suffix, factor in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


IO_LIMIT = entries(
    _bandwidth_entry,
    "a(st)",
    lambda e: e,
    lambda e: f"{e[0]} {_fmt_si(e[1])}",
    "a device and a limit: '/dev/sda 10M' (powers of 1000), 'infinity', or a (path, int) tuple",
    tuple_entries=True,
)


def _weight_entry(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) == 2:
        path, weight = parse_string(value[0]), value[1]
    else:
        path, weight = _split_device(parse_string(value), "WEIGHT")
    return path, parse_int(weight, 0, UINT64_MAX)


IO_DEVICE_WEIGHT = entries(
    _weight_entry,
    "a(st)",
    lambda e: e,
    lambda e: f"{e[0]} {e[1]}",
    "a device and a weight: '/dev/sda 200', or a (path, int) tuple",
    tuple_entries=True,
)


def _latency_entry(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) == 2:
        path, target = parse_string(value[0]), value[1]
        if isinstance(target, int) and not isinstance(target, bool):
            return path, parse_int(target, 0, INFINITY)
    else:
        path, target = _split_device(parse_string(value), "TIME")
    return path, parse_timespan(target)


IO_LATENCY = entries(
    _latency_entry,
    "a(st)",
    lambda e: e,
    lambda e: f"{e[0]} {format_timespan(e[1])}",
    "a device and a latency target: '/dev/sda 25ms', or a (path, microseconds) tuple",
    tuple_entries=True,
)


def _filter_path(value: object) -> str:
    text = parse_string(value)
    if not text.startswith("/"):
        raise Invalid("not an absolute path")
    return text


BPF_PATHS = entries(
    _filter_path, "as", lambda e: e, lambda e: e, "a pinned BPF program path '/sys/fs/bpf/x'"
)

_BPF_TYPES = [
    "ingress",
    "egress",
    "sock_create",
    "sock_ops",
    "device",
    "bind4",
    "bind6",
    "connect4",
    "connect6",
    "post_bind4",
    "post_bind6",
    "sendmsg4",
    "sendmsg6",
    "sysctl",
    "recvmsg4",
    "recvmsg6",
    "getsockopt",
    "setsockopt",
]


def _bpf_entry(value: object) -> tuple[str, str]:
    if isinstance(value, tuple) and len(value) == 2:
        kind, path = str(value[0]), parse_string(value[1])
    else:
        kind, sep, path = parse_string(value).partition(":")
        if not sep:
            raise Invalid("expected 'TYPE:PATH'")
    if kind not in _BPF_TYPES:
        raise Invalid(f"unknown BPF attach type {kind!r}")
    return kind, path


BPF_PROGRAM = entries(
    _bpf_entry,
    "a(ss)",
    lambda e: e,
    lambda e: f"{e[0]}:{e[1]}",
    f"'TYPE:PATH' with TYPE one of {', '.join(_BPF_TYPES)}",
    tuple_entries=True,
)

# -- SocketBindAllow=, SocketBindDeny= ------------------------------------------------------

_AF = {"ipv4": 2, "ipv6": 10}
_PROTO = {"tcp": 6, "udp": 17}
# (family, protocol, number of ports, first port); 0 means any.
Bind = tuple[int, int, int, int]


def _socket_bind_entry(value: object) -> Bind:
    if isinstance(value, tuple) and len(value) == 4:
        return tuple(parse_int(v, 0, 65535) for v in value)  # type: ignore[return-value]
    text = parse_string(value)
    tokens = text.split(":")
    family = proto = 0
    if tokens and tokens[0] in _AF:
        family = _AF[tokens.pop(0)]
    if tokens and tokens[0] in _PROTO:
        proto = _PROTO[tokens.pop(0)]
    if len(tokens) != 1:
        raise Invalid("expected '[ipv4|ipv6:][tcp|udp:]PORT[-PORT]|any'")
    ports = tokens[0]
    if ports == "any":
        return (family, proto, 0, 0)
    m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", ports)
    if not m:
        raise Invalid(f"bad port range {ports!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if not 1 <= lo <= hi <= 65535:
        raise Invalid(f"bad port range {ports!r}")
    return (family, proto, hi - lo + 1, lo)


def _socket_bind_text(e: Bind) -> str:
    family, proto, count, first = e
    parts = [k for k, v in _AF.items() if v == family] + [
        k for k, v in _PROTO.items() if v == proto
    ]
    if count == 0:
        parts.append("any")
    else:
        parts.append(str(first) if count == 1 else f"{first}-{first + count - 1}")
    return ":".join(parts)


SOCKET_BIND = entries(
    _socket_bind_entry,
    "a(iiqq)",
    lambda e: e,
    _socket_bind_text,
    "'[ipv4|ipv6:][tcp|udp:]PORT[-PORT]' or 'any'",
    tuple_entries=True,
)

__all__ = [
    "BPF_PATHS",
    "BPF_PROGRAM",
    "CONTROLLERS",
    "CPU_SET",
    "CPU_WEIGHT",
    "DELEGATE",
    "DEVICE_ALLOW",
    "IO_DEVICE_WEIGHT",
    "IO_LATENCY",
    "IO_LIMIT",
    "SOCKET_BIND",
    "format_size",
]
