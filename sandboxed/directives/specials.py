"""Kinds with a syntax of their own: bind mounts, IP prefixes, capabilities, rlimits, signals...

Each follows the matching branch of systemd 252's ``bus-unit-util.c``; see
:mod:`sandboxed.directives.kinds` for what a :class:`~sandboxed.directives.kinds.Kind` is.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable

from sandboxed.directives.kinds import Kind, Property, append_merge, mask_set, scalar
from sandboxed.directives.values import (
    INFINITY,
    UINT64_MAX,
    USEC_PER_SEC,
    Invalid,
    format_signal,
    format_size,
    join_words,
    parse_int,
    parse_signal,
    parse_size,
    parse_string,
    parse_timespan,
    parse_words,
    quote_word,
    split_words,
)

# -- users, directories ---------------------------------------------------------------------


def _user(value: object) -> str:
    text = parse_string(value)
    if not text or re.search(r"[\s:/]", text):
        raise Invalid("not a user or group name or numeric ID")
    return text


USER = scalar("s", "a user or group name, or a numeric ID (int or str)", _user, lambda v: v)


def _working_directory(value: object) -> str:
    text = parse_string(value)
    body = text[1:] if text.startswith("-") else text
    if body != "~" and not body.startswith("/"):
        raise Invalid("not an absolute path or '~'")
    return text


WORKING_DIRECTORY = scalar(
    "s",
    "an absolute path (str or Path), '~' for the user's home; a leading '-' ignores a missing one",
    _working_directory,
    lambda v: v,
)

# -- BindPaths=, BindReadOnlyPaths= ---------------------------------------------------------

# One bind mount: (source with its "-" prefix, destination, recursive).
Bind = tuple[str, str, bool]


def _bind_from_text(word: str) -> Bind:
    parts = word.split(":")
    if len(parts) > 3 or any(p == "" for p in parts[:2]):
        raise Invalid(f"bad bind mount {word!r}: use SRC, SRC:DEST or SRC:DEST:OPTIONS")
    src = parts[0]
    dest = parts[1] if len(parts) > 1 else src.lstrip("-")
    options = parts[2] if len(parts) > 2 else ""
    if options not in ("", "rbind", "norbind"):
        raise Invalid(f"unknown bind option {options!r}: use rbind or norbind")
    if not src.lstrip("-").startswith("/") or not dest.startswith("/"):
        raise Invalid(f"bad bind mount {word!r}: paths must be absolute")
    return (src, dest, options != "norbind")


def _bind_convert(value: object) -> tuple[Bind, ...]:
    if isinstance(value, str):
        return tuple(_bind_from_text(w) for w in _split_binds(value))
    if isinstance(value, os.PathLike):
        return (_bind_from_text(str(os.fspath(value))),)
    if isinstance(value, Iterable):
        out: list[Bind] = []
        for item in value:
            if isinstance(item, tuple) and len(item) == 3 and isinstance(item[2], bool):
                out.append(
                    _bind_from_text(f"{item[0]}:{item[1]}:{'rbind' if item[2] else 'norbind'}")
                )
            elif isinstance(item, tuple) and len(item) == 2:
                out.append(_bind_from_text(f"{os.fspath(item[0])}:{os.fspath(item[1])}"))
            else:
                out.extend(_bind_convert(parse_words([item])[0]))
        return tuple(out)
    raise Invalid(f"expected a string or a list, got {type(value).__name__}")


def _split_binds(text: str) -> list[str]:
    return list(split_words(text))


def _bind_render(value: tuple[Bind, ...]) -> list[str]:
    words = []
    for src, dest, rec in value:
        word = src if dest == src.lstrip("-") and rec else f"{src}:{dest}"
        if not rec:
            word += ":norbind"
        words.append(quote_word(word))
    return [" ".join(words)]


def _bind_emit(bus: str, value: tuple[Bind, ...]) -> list[Property]:
    ms_rec = 16384
    return [
        (
            bus,
            "a(ssbt)",
            [
                (src.lstrip("-"), dest, src.startswith("-"), ms_rec if rec else 0)
                for src, dest, rec in value
            ],
        )
    ]


BIND_PATHS = Kind(
    "a(ssbt)",
    "bind mounts: 'SRC[:DEST[:rbind|norbind]]' words "
    "(a leading '-' on SRC ignores a missing source), "
    "or a list of such strings or (src, dest) tuples; '' resets",
    _bind_convert,
    _bind_emit,
    _bind_render,
    append_merge,
)

# -- TemporaryFileSystem= -------------------------------------------------------------------


def _tmpfs_convert(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value):
        value = [f"{p}:{o}" if o else p for p, o in value]
    out = []
    for word in parse_words(value):
        path, _, options = word.partition(":")
        if not path.startswith("/"):
            raise Invalid(f"{path!r} is not an absolute path")
        out.append((path, options))
    return tuple(out)


TEMPORARY_FS = Kind(
    "a(ss)",
    "mount points 'PATH[:OPTIONS]' as a space-separated string or a list; '' resets",
    _tmpfs_convert,
    lambda bus, v: [(bus, "a(ss)", list(v))],
    lambda v: [join_words(f"{p}:{o}" if o else p for p, o in v)],
    append_merge,
)

# -- capabilities ---------------------------------------------------------------------------

_CAPS = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
]

CAPABILITIES = mask_set(
    {name: 1 << bit for bit, name in enumerate(_CAPS)},
    UINT64_MAX,
    "capability",
    lower=True,
    plural="capabilities",
)

# -- IPAddressAllow=, IPAddressDeny= --------------------------------------------------------

AF_INET, AF_INET6 = 2, 10
_IP_SHORTCUTS = {
    "any": ("0.0.0.0/0", "::/0"),
    "localhost": ("127.0.0.0/8", "::1/128"),
    "link-local": ("169.254.0.0/16", "fe80::/64"),
    "multicast": ("224.0.0.0/4", "ff00::/8"),
}
# (family, address as text, prefix length); the address is kept as given, as systemd does.
Prefix = tuple[int, str, int]


def _prefix(word: str) -> Prefix:
    try:
        iface = ipaddress.ip_interface(word)
    except ValueError:
        raise Invalid(f"{word!r} is not an IP address or prefix") from None
    family = AF_INET if iface.version == 4 else AF_INET6
    return (family, str(iface.ip), iface.network.prefixlen)


def _ip_convert(value: object) -> tuple[Prefix, ...]:
    if isinstance(value, tuple) and all(
        isinstance(p, tuple) and len(p) == 3 and isinstance(p[1], str) for p in value
    ):
        return tuple(_prefix(f"{a}/{n}") for _, a, n in value)
    if isinstance(
        value,
        (
            ipaddress.IPv4Network,
            ipaddress.IPv6Network,
            ipaddress.IPv4Address,
            ipaddress.IPv6Address,
        ),
    ):
        value = [str(value)]
    words = (
        parse_words(value)
        if not isinstance(value, Iterable) or isinstance(value, str)
        else [str(v) for v in value]
    )
    out: list[Prefix] = []
    for word in words:
        if word in _IP_SHORTCUTS:
            out.extend(_prefix(p) for p in _IP_SHORTCUTS[word])
        else:
            out.append(_prefix(word))
    return tuple(out)


def _ip_emit(bus: str, value: tuple[Prefix, ...]) -> list[Property]:
    return [
        (bus, "a(iayu)", [(fam, ipaddress.ip_address(addr).packed, n) for fam, addr, n in value])
    ]


IP_ADDRESSES = Kind(
    "a(iayu)",
    "IP addresses or prefixes ('10.0.0.0/8', '::1'), or any, localhost, link-local, multicast; "
    "a space-separated string or a list; '' resets",
    _ip_convert,
    _ip_emit,
    lambda v: [" ".join(f"{a}/{n}" for _, a, n in v)],
    append_merge,
)

# -- signals --------------------------------------------------------------------------------

SIGNAL = scalar(
    "i",
    "a signal: signal.Signals, a number, 'SIGTERM', 'TERM' or 'SIGRTMIN+3'",
    parse_signal,
    format_signal,
)

# -- resource limits (LimitNOFILE= ...) -----------------------------------------------------

_RLIM_INFINITY = UINT64_MAX


def _rlimit_kind(unit: str) -> Kind:
    def one(value: object) -> int:
        if isinstance(value, str) and value.strip() == "infinity":
            return _RLIM_INFINITY
        if isinstance(value, int) and not isinstance(value, bool) and value == _RLIM_INFINITY:
            return value
        if unit == "size":
            n = parse_size(value, allow_infinity=False)
        elif unit == "sec":
            usec = parse_timespan(value)
            n = _RLIM_INFINITY if usec == INFINITY else -(-usec // USEC_PER_SEC)
        elif unit == "usec":
            n = (
                parse_timespan(value, default_unit=1)
                if isinstance(value, str)
                else parse_int(value, 0, UINT64_MAX - 1)
            )
        elif unit == "nice":
            n = _rlimit_nice(value)
        else:
            n = parse_int(value, 0, UINT64_MAX - 1)
        return n

    def convert(value: object) -> tuple[int, int]:
        if isinstance(value, tuple) and len(value) == 2:
            soft, hard = one(value[0]), one(value[1])
        elif isinstance(value, str) and ":" in value:
            s, _, h = value.partition(":")
            if ":" in h:
                raise Invalid("use SOFT:HARD")
            soft, hard = one(s), one(h)
        else:
            soft = hard = one(value)
        if soft > hard:
            raise Invalid("the soft limit is above the hard limit")
        return (soft, hard)

    def fmt(n: int) -> str:
        if n == _RLIM_INFINITY:
            return "infinity"
        return format_size(n) if unit == "size" else str(n)

    def render(value: tuple[int, int]) -> list[str]:
        soft, hard = value
        return [fmt(soft) if soft == hard else f"{fmt(soft)}:{fmt(hard)}"]

    what = {
        "size": "bytes (int, '64M')",
        "sec": "seconds (int, timedelta, '1h')",
        "usec": "microseconds (int, '500ms')",
        "nice": "a raw limit 0..40, or a nice level '+5'/'-5'",
        "count": "a count (int)",
    }[unit]
    return Kind(
        "t",
        f"a limit in {what} or 'infinity'; 'SOFT:HARD' or a (soft, hard) tuple for two",
        convert,
        lambda bus, v: [(bus, "t", v[1]), (bus + "Soft", "t", v[0])],
        render,
        extra=lambda bus: (bus + "Soft",),
    )


def _rlimit_nice(value: object) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+"):
            n = parse_int(text[1:], 0, 19)
            return 20 - n
        if text.startswith("-"):
            n = parse_int(text[1:], 0, 20)
            return 20 + n
    return parse_int(value, 0, 40)


_RLIMIT_UNITS = {
    "CPU": "sec",
    "FSIZE": "size",
    "DATA": "size",
    "STACK": "size",
    "CORE": "size",
    "RSS": "size",
    "NOFILE": "count",
    "AS": "size",
    "NPROC": "count",
    "MEMLOCK": "size",
    "LOCKS": "count",
    "SIGPENDING": "count",
    "MSGQUEUE": "size",
    "NICE": "nice",
    "RTPRIO": "count",
    "RTTIME": "usec",
}
_RLIMIT_EXAMPLES = {"sec": "30", "size": "64M", "count": "1024", "nice": "+5", "usec": "500ms"}

RLIMITS: list[tuple[str, Kind, str, str, str]] = [
    (
        f"Limit{name}",
        _rlimit_kind(unit),
        "",
        _RLIMIT_EXAMPLES[unit],
        f"setrlimit(RLIMIT_{name}); sent as Limit{name} (hard) and Limit{name}Soft",
    )
    for name, unit in _RLIMIT_UNITS.items()
]
