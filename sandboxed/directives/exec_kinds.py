"""Value kinds of systemd.exec(5) and systemd.service(5) directives with a syntax of their own.

Each follows the matching branch of ``bus_append_execute_property()`` or
``bus_append_service_property()`` in systemd 252's ``src/shared/bus-unit-util.c``.
"""

from __future__ import annotations

import base64
import binascii
import errno
import re
from collections.abc import Hashable, Iterable
from typing import Any

from sandboxed.directives.kinds import Kind, Property, append_merge, entries, named_int, scalar
from sandboxed.directives.values import (
    Invalid,
    cpu_set_to_bytes,
    format_cpu_set,
    format_signal,
    join_words,
    parse_cpu_set,
    parse_int,
    parse_signal,
    parse_string,
    parse_words,
    quote_word,
)

# -- named integers -------------------------------------------------------------------------

LOG_LEVEL = named_int(
    "i",
    {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7},
    0,
    7,
    what="a syslog level",
)
_FACILITIES = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
]
SYSLOG_FACILITY = named_int(
    "i",
    {name: i for i, name in enumerate(_FACILITIES)} | {f"local{i}": 16 + i for i in range(8)},
    0,
    23,
    what="a syslog facility",
)
SCHED_POLICY = named_int(
    "i", {"other": 0, "fifo": 1, "rr": 2, "batch": 3, "idle": 5}, 0, 6, what="a scheduling policy"
)
IO_CLASS = named_int(
    "i",
    {"none": 0, "realtime": 1, "best-effort": 2, "idle": 3},
    0,
    3,
    what="an I/O scheduling class",
)
NUMA_POLICY = named_int(
    "i",
    {"default": 0, "preferred": 1, "bind": 2, "interleave": 3, "local": 4},
    0,
    4,
    what="a NUMA policy",
)
MOUNT_FLAGS = named_int(
    "t",
    {"shared": 1 << 20, "slave": 1 << 19, "private": 1 << 18},
    0,
    0,
    what="a mount propagation",
    numbers=False,
)

# -- SystemCallErrorNumber= -----------------------------------------------------------------

_KILL = 2**31 - 2  # SECCOMP_ERROR_NUMBER_KILL
_ERRNO_BY_NAME = {name: num for num, name in errno.errorcode.items()}


def _syscall_errno(value: object) -> Hashable:
    if isinstance(value, str):
        text = value.strip()
        if text == "kill":
            return _KILL
        if text in _ERRNO_BY_NAME:
            return _ERRNO_BY_NAME[text]
    if value == _KILL:
        return _KILL
    return parse_int(value, 0, 4095)


SYSCALL_ERRNO = scalar(
    "i",
    "an errno name ('EPERM') or number 0..4095, or 'kill'",
    _syscall_errno,
    lambda v: "kill" if v == _KILL else errno.errorcode.get(v, str(v)),
)

# -- bit masks given as words ---------------------------------------------------------------

_SECURE_BITS = {
    "noroot": 1 << 0,
    "noroot-locked": 1 << 1,
    "no-setuid-fixup": 1 << 2,
    "no-setuid-fixup-locked": 1 << 3,
    "keep-caps": 1 << 4,
    "keep-caps-locked": 1 << 5,
}


def _word_mask(
    names: dict[str, int], what: str, extra: dict[str, int] | None = None, hex_ok: bool = False
) -> Any:
    def convert(value: object) -> Hashable:
        if isinstance(value, int) and not isinstance(value, bool):
            return parse_int(value, 0, 2**64 - 1)
        mask = 0
        for word in parse_words(value):
            if word in names:
                mask |= names[word]
            elif extra and word in extra:
                mask = extra[word] if word == "all" else mask | extra[word]
            elif hex_ok and re.fullmatch(r"(0x)?[0-9a-fA-F]+", word):
                mask |= int(word, 16)
            else:
                raise Invalid(f"unknown {what} {word!r}")
        return mask

    return convert


def _mask_words(names: dict[str, int]) -> Any:
    def render(mask: int) -> list[str]:
        words = [n for n, bit in names.items() if mask & bit]
        rest = mask & ~sum(names[n] for n in words)
        return [" ".join(words + ([f"{rest:x}"] if rest else []))]

    return render


SECURE_BITS = Kind(
    "i",
    f"secure bits: any of {', '.join(_SECURE_BITS)} (space-separated string or list)",
    _word_mask(_SECURE_BITS, "secure bit"),
    lambda bus, v: [(bus, "i", v)],
    _mask_words(_SECURE_BITS),
)

_COREDUMP = {
    name: 1 << i
    for i, name in enumerate(
        [
            "private-anonymous",
            "shared-anonymous",
            "private-file-backed",
            "shared-file-backed",
            "elf-headers",
            "private-huge",
            "shared-huge",
            "private-dax",
            "shared-dax",
        ]
    )
}
COREDUMP_FILTER = Kind(
    "t",
    f"memory types: any of {', '.join(_COREDUMP)}, 'default', 'all', or hex numbers; an int mask",
    _word_mask(_COREDUMP, "memory type", {"default": 0x33, "all": 0xFFFFFFFF}, hex_ok=True),
    lambda bus, v: [(bus, "t", v)],
    lambda v: ["all" if v == 0xFFFFFFFF else _mask_words(_COREDUMP)(v)[0]],
)

# -- AppArmorProfile=, SmackProcessLabel= ---------------------------------------------------


def _label(value: object) -> Hashable:
    text = parse_string(value)
    if not text.lstrip("-"):
        raise Invalid("empty label")
    return text


LABEL = Kind(
    "(bs)",
    "a profile or label name; a leading '-' ignores failures",
    _label,
    lambda bus, v: [(bus, "(bs)", (v.startswith("-"), v[1:] if v.startswith("-") else v))],
    lambda v: [v],
)

# -- CPUAffinity=, NUMAMask= ----------------------------------------------------------------


def _affinity(value: object) -> Hashable:
    if value == "numa":
        return "numa"
    return parse_cpu_set(value)


CPU_AFFINITY = Kind(
    "ay",
    "CPU numbers '0-3 8', '0,1' or a list of ints; 'numa' to follow NUMAMask=",
    _affinity,
    lambda bus, v: (
        [("CPUAffinityFromNUMA", "b", True)] if v == "numa" else [(bus, "ay", cpu_set_to_bytes(v))]
    ),
    lambda v: [v if v == "numa" else format_cpu_set(v)],
    extra=lambda bus: ("CPUAffinityFromNUMA",),
)


def _numa_mask(value: object) -> Hashable:
    if value == "all":
        raise Invalid("'all' depends on the host's NUMA nodes; list them instead")
    return parse_cpu_set(value)


NUMA_MASK = Kind(
    "ay",
    "NUMA node numbers: '0-1', or a list of ints",
    _numa_mask,
    lambda bus, v: [(bus, "ay", cpu_set_to_bytes(v))],
    lambda v: [format_cpu_set(v)],
)

# -- EnvironmentFile= -----------------------------------------------------------------------


def _env_file(value: object) -> str:
    text = parse_string(value)
    if not text.lstrip("-").startswith("/"):
        raise Invalid("not an absolute path")
    return text


ENVIRONMENT_FILES = entries(
    _env_file,
    "a(sb)",
    lambda e: (e[1:], True) if e.startswith("-") else (e, False),
    lambda e: e,
    "an absolute path (a leading '-' ignores a missing file)",
    bus_name="EnvironmentFiles",
)

# -- credentials ----------------------------------------------------------------------------

_CRED_ID = r"[A-Za-z0-9_.@-]+"


def _cescape(data: bytes) -> str:
    out = []
    for b in data:
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif 0x20 <= b < 0x7F and c not in "'\"":
            out.append(c)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def _set_credential(encrypted: bool) -> Any:
    def parse(value: object) -> tuple[str, bytes]:
        if isinstance(value, tuple) and len(value) == 2:
            ident, data = parse_string(value[0]), value[1]
            if isinstance(data, str):
                data = data.encode()
            if not isinstance(data, bytes):
                raise Invalid("credential data must be bytes or str")
        else:
            ident, sep, text = parse_string(value).partition(":")
            if not sep:
                raise Invalid("expected 'ID:DATA'")
            if encrypted:
                try:
                    data = base64.b64decode(text, validate=True)
                except binascii.Error:
                    raise Invalid("DATA is not base64") from None
            else:
                data = _cunescape_bytes(text)
        if not re.fullmatch(_CRED_ID, ident):
            raise Invalid(f"bad credential name {ident!r}")
        return ident, data

    return parse


def _cunescape_bytes(text: str) -> bytes:
    out = bytearray()
    i = 0
    simple = {
        "n": 10,
        "t": 9,
        "r": 13,
        "a": 7,
        "b": 8,
        "f": 12,
        "v": 11,
        "\\": 92,
        '"': 34,
        "'": 39,
    }
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            raise Invalid(f"bad escape in {text!r}")
    return bytes(out)


SET_CREDENTIAL = entries(
    _set_credential(False),
    "a(say)",
    lambda e: e,
    lambda e: f"{e[0]}:{_cescape(e[1])}",
    "'ID:DATA' (C escapes allowed) or an (id, bytes) tuple",
    tuple_entries=True,
)
SET_CREDENTIAL_ENCRYPTED = entries(
    _set_credential(True),
    "a(say)",
    lambda e: e,
    lambda e: f"{e[0]}:{base64.b64encode(e[1]).decode()}",
    "'ID:BASE64' (as systemd-creds encrypt prints) or an (id, bytes) tuple",
    tuple_entries=True,
)


def _load_credential(value: object) -> tuple[str, str]:
    if isinstance(value, tuple) and len(value) == 2:
        ident, source = parse_string(value[0]), parse_string(value[1])
    else:
        ident, _, source = parse_string(value).partition(":")
        source = source or ident
    if not re.fullmatch(_CRED_ID, ident):
        raise Invalid(f"bad credential name {ident!r}")
    return ident, source


LOAD_CREDENTIAL = entries(
    _load_credential,
    "a(ss)",
    lambda e: e,
    lambda e: e[0] if e[0] == e[1] else f"{e[0]}:{e[1]}",
    "'ID[:PATH]' or an (id, path) tuple",
    tuple_entries=True,
)

# -- LogExtraFields= ------------------------------------------------------------------------


def _log_field(value: object) -> str:
    text = parse_string(value)
    if not re.fullmatch(r"[A-Z0-9][A-Z0-9_]*=.*", text, re.DOTALL):
        raise Invalid("expected 'FIELD=value' with an upper-case journal field name")
    return text


LOG_EXTRA_FIELDS = entries(
    _log_field,
    "aay",
    lambda e: e.encode(),
    lambda e: e,
    "a journal field 'FIELD=value'",
)

# -- StateDirectory= and friends ------------------------------------------------------------


def _simplify(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def _exec_directories(value: object) -> Hashable:
    out = []
    for word in parse_words(value):
        src, sep, dest = word.partition(":")
        if not src or src.startswith("/") or ".." in src.split("/") or ":" in dest:
            raise Invalid(f"{word!r} is not a relative directory name [:SYMLINK]")
        out.append(f"{_simplify(src)}:{_simplify(dest)}" if sep and dest else _simplify(src))
    return tuple(out)


def _exec_directories_emit(bus: str, value: Any) -> list[Property]:
    props: list[Property] = []
    plain = [w for w in value if ":" not in w]
    links = [(*w.split(":", 1), 0) for w in value if ":" in w]
    if plain:
        props.append((bus, "as", plain))
    if links:
        props.append((bus + "Symlink", "a(sst)", links))
    return props


EXEC_DIRECTORY = Kind(
    "as",
    "directory names relative to the base directory, each optionally 'NAME:SYMLINK'",
    _exec_directories,
    _exec_directories_emit,
    lambda v: [join_words(v)],
    append_merge,
    extra=lambda bus: (bus + "Symlink",),
)

# -- RootHash=, RootHashSignature=, RootImageOptions=, MountImages=, ExtensionImages= -------


def _root_hash(value: object) -> Hashable:
    if isinstance(value, bytes):
        value = value.hex()
    text = parse_string(value)
    if text.startswith("/"):
        return text
    if not re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,}", text):
        raise Invalid("neither an absolute path nor a hex hash of at least 16 bytes")
    return text.lower()


ROOT_HASH = Kind(
    "ay",
    "a hex root hash (or bytes), or the absolute path of a file holding it",
    _root_hash,
    lambda bus, v: (
        [("RootHashPath", "s", v)] if v.startswith("/") else [(bus, "ay", bytes.fromhex(v))]
    ),
    lambda v: [v],
    extra=lambda bus: ("RootHashPath",),
)


def _root_hash_signature(value: object) -> Hashable:
    text = parse_string(value)
    if text.startswith("/"):
        return text
    if not text.startswith("base64:"):
        raise Invalid("neither an absolute path nor 'base64:...'")
    try:
        base64.b64decode(text[7:], validate=True)
    except binascii.Error:
        raise Invalid("not valid base64") from None
    return text


ROOT_HASH_SIGNATURE = Kind(
    "ay",
    "'base64:...' (a PKCS#7 signature) or the absolute path of a file holding it",
    _root_hash_signature,
    lambda bus, v: (
        [("RootHashSignaturePath", "s", v)]
        if v.startswith("/")
        else [(bus, "ay", base64.b64decode(v[7:]))]
    ),
    lambda v: [v],
    extra=lambda bus: ("RootHashSignaturePath",),
)

Options = tuple[tuple[str, str], ...]


def _partition_options(fields: list[str]) -> Options:
    out = []
    while fields:
        if len(fields) == 1:
            out.append(("root", fields.pop(0)))
        else:
            out.append((fields.pop(0), fields.pop(0)))
    return tuple(out)


def _options_text(options: Options) -> str:
    return ":".join(f"{p}:{o}" for p, o in options)


def _root_image_options(value: object) -> Hashable:
    if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value):
        return tuple((parse_string(p), parse_string(o)) for p, o in value)
    out = []
    for word in parse_words(value):
        part, sep, opts = word.partition(":")
        out.append((part, opts) if sep and opts else ("root", part))
    return tuple(out)


ROOT_IMAGE_OPTIONS = Kind(
    "a(ss)",
    "mount options per partition: 'root:ro,noexec usr:ro' ('OPTS' alone is for root)",
    _root_image_options,
    lambda bus, v: [(bus, "a(ss)", list(v))],
    lambda v: [join_words(f"{p}:{o}" for p, o in v)],
    append_merge,
)


def _images(with_dest: bool) -> Any:
    def convert(value: object) -> Hashable:
        if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value):
            value = [_image_text(v, with_dest) for v in value]
        out: list[Hashable] = []
        for word in parse_words(value):
            fields = word.split(":")
            src = fields.pop(0)
            if not src.lstrip("-").startswith("/"):
                raise Invalid(f"{src!r} is not an absolute path")
            if with_dest:
                if not fields or not fields[0].startswith("/"):
                    raise Invalid(f"{word!r}: expected 'SRC:DEST[:PART:OPTS...]'")
                dest = fields.pop(0)
                out.append((src, dest, _partition_options(fields)))
            else:
                out.append((src, _partition_options(fields)))
        return tuple(out)

    return convert


def _image_text(entry: tuple[Any, ...], with_dest: bool) -> str:
    head = list(entry[:2] if with_dest else entry[:1])
    opts = entry[-1]
    return ":".join(head + ([_options_text(opts)] if opts else []))


def _mount_images_emit(bus: str, value: Any) -> list[Property]:
    return [
        (bus, "a(ssba(ss))", [(s.lstrip("-"), d, s.startswith("-"), list(o)) for s, d, o in value])
    ]


def _extension_images_emit(bus: str, value: Any) -> list[Property]:
    return [(bus, "a(sba(ss))", [(s.lstrip("-"), s.startswith("-"), list(o)) for s, o in value])]


MOUNT_IMAGES = Kind(
    "a(ssba(ss))",
    "'[-]IMAGE:DEST[:PART:OPTS...]' words, or a list of them",
    _images(True),
    _mount_images_emit,
    lambda v: [join_words(_image_text(e, True) for e in v)],
    append_merge,
)
EXTENSION_IMAGES = Kind(
    "a(sba(ss))",
    "'[-]IMAGE[:PART:OPTS...]' words, or a list of them",
    _images(False),
    _extension_images_emit,
    lambda v: [join_words(_image_text(e, False) for e in v)],
    append_merge,
)

# -- SuccessExitStatus= and friends ---------------------------------------------------------

_LSB = {
    "SUCCESS": 0,
    "FAILURE": 1,
    "INVALIDARGUMENT": 2,
    "NOTIMPLEMENTED": 3,
    "NOPERMISSION": 4,
    "NOTINSTALLED": 5,
    "NOTCONFIGURED": 6,
    "NOTRUNNING": 7,
}
ExitSet = tuple[tuple[int, ...], tuple[int, ...]]


def _exit_status(value: object) -> Hashable:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, tuple) for v in value):
        statuses = {parse_int(s, 0, 255) for s in value[0]}
        signals = {parse_signal(s) for s in value[1]}
        return (tuple(sorted(statuses)), tuple(sorted(signals)))
    items: Iterable[object] = (
        parse_words(value) if isinstance(value, str) else value  # type: ignore[assignment]
    )
    if not isinstance(items, Iterable):
        items = [items]
    statuses, signals = set(), set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 255:
            statuses.add(item)
        elif isinstance(item, str) and item.isdigit():
            statuses.add(parse_int(item, 0, 255))
        elif isinstance(item, str) and item in _LSB:
            statuses.add(_LSB[item])
        else:
            signals.add(parse_signal(item))
    return (tuple(sorted(statuses)), tuple(sorted(signals)))


def _exit_merge(a: ExitSet, b: ExitSet) -> Hashable:
    if not b[0] and not b[1]:
        return b
    return (tuple(sorted(set(a[0]) | set(b[0]))), tuple(sorted(set(a[1]) | set(b[1]))))


EXIT_STATUS = Kind(
    "(aiai)",
    "exit statuses 0..255 (or SUCCESS, FAILURE... names) and signal names: '1 2 SIGKILL'",
    _exit_status,
    lambda bus, v: [(bus, "(aiai)", (list(v[0]), list(v[1])))],
    lambda v: [" ".join([str(s) for s in v[0]] + [format_signal(s) for s in v[1]])],
    _exit_merge,
)

__all__ = [
    "COREDUMP_FILTER",
    "CPU_AFFINITY",
    "ENVIRONMENT_FILES",
    "EXEC_DIRECTORY",
    "EXIT_STATUS",
    "EXTENSION_IMAGES",
    "IO_CLASS",
    "LABEL",
    "LOAD_CREDENTIAL",
    "LOG_EXTRA_FIELDS",
    "LOG_LEVEL",
    "MOUNT_FLAGS",
    "MOUNT_IMAGES",
    "NUMA_MASK",
    "NUMA_POLICY",
    "ROOT_HASH",
    "ROOT_HASH_SIGNATURE",
    "ROOT_IMAGE_OPTIONS",
    "SCHED_POLICY",
    "SECURE_BITS",
    "SET_CREDENTIAL",
    "SET_CREDENTIAL_ENCRYPTED",
    "SYSCALL_ERRNO",
    "SYSLOG_FACILITY",
    "quote_word",
]
