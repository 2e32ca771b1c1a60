"""``sandboxed doctor``: what this machine offers a sandbox, and what to do about each gap.

Each check prints one line (``ok``, ``note``, ``warn`` or ``FAIL``) and, for
a problem, the remedy. The directive checks start a throwaway oneshot unit per
directive: first whether the manager *accepts* it and can start a process with
it, then, for directives that a kernel may silently lack (BPF firewalling, BPF
LSM, memory limits...), a small probe inside the unit that tells whether it is
*enforced*.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from sandboxed._errors import SandboxError
from sandboxed.cli.options import Command

#: Directives whose support depends on the kernel, the container or the systemd build.
ACCEPTANCE: tuple[str, ...] = (
    "PrivateNetwork=yes",
    "PrivateUsers=yes",
    "PrivateIPC=yes",
    "PrivateDevices=yes",
    "PrivateTmp=yes",
    "PrivateMounts=yes",
    "DynamicUser=yes",
    "ProtectSystem=strict",
    "ProtectHome=tmpfs",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "ProtectClock=yes",
    "ProtectKernelLogs=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelTunables=yes",
    "ProtectControlGroups=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX",
    "SystemCallFilter=@system-service",
    "SystemCallArchitectures=native",
    "MemoryDenyWriteExecute=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "KeyringMode=private",
    "CPUQuota=20%",
    "MemoryMax=256M",
    "MemorySwapMax=0",
    "TasksMax=64",
    "IOWeight=50",
)

#: (directive, probe, what the remedy is): the probe exits 0 when the directive holds, 1 when not.
ENFORCEMENT: tuple[tuple[str, str, str], ...] = (
    (
        "PrivateNetwork=yes",
        "import socket\n"
        "raise SystemExit(0 if [n for _, n in socket.if_nameindex()] == ['lo'] else 1)",
        "this kernel or container does not give units a network namespace",
    ),
    (
        "IPAddressDeny=any",
        "import socket\ns = socket.socket(); s.settimeout(1)\n"
        "try: s.connect(('127.0.0.1', 9))\n"
        "except (TimeoutError, PermissionError): raise SystemExit(0)\n"
        "except OSError: raise SystemExit(1)\nraise SystemExit(1)",
        "needs cgroup2 BPF firewalling; use PrivateNetwork= (NoNetwork) instead",
    ),
    (
        "SocketBindDeny=any",
        "import socket\ns = socket.socket()\n"
        "try: s.bind(('127.0.0.1', 0))\nexcept PermissionError: raise SystemExit(0)\n"
        "raise SystemExit(1)",
        "needs BPF cgroup programs on a pure cgroup2 host; use PrivateNetwork= "
        "or RestrictAddressFamilies= instead",
    ),
    (
        "RestrictFileSystems=~sysfs",
        "import os\ntry: os.listdir('/sys')\nexcept PermissionError: raise SystemExit(0)\n"
        "raise SystemExit(1)",
        "needs the BPF LSM (boot with lsm=...,bpf); use InaccessiblePaths= instead",
    ),
    (
        "NoNewPrivileges=yes",
        "s = open('/proc/self/status').read()\n"
        "raise SystemExit(0 if 'NoNewPrivs:\\t1' in s else 1)",
        "the kernel does not support no_new_privs",
    ),
    (
        "SystemCallFilter=~@clock",
        "s = open('/proc/self/status').read()\nraise SystemExit(0 if 'Seccomp:\\t2' in s else 1)",
        "this kernel has no seccomp filters: SystemCallFilter= (and Hardened) cannot hold",
    ),
    (
        "MemoryMax=32M",
        "b = bytearray(128 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\nraise SystemExit(1)",
        "the memory controller is not available to the manager",
    ),
    (
        "TasksMax=4",
        "import threading, time\nts = []\n"
        "try:\n    for _ in range(16):\n"
        "        t = threading.Thread(target=time.sleep, args=(1,)); t.start(); ts.append(t)\n"
        "except RuntimeError: raise SystemExit(0)\nraise SystemExit(1)",
        "the pids controller is not available to the manager",
    ),
)


@attrs.frozen
class Finding:
    """One line of the report: ``level`` is ok, note, warn or FAIL."""

    level: str
    text: str
    remedy: str = ""


def _print(f: Finding) -> None:
    print(f"{f.level:<5} {f.text}")
    if f.remedy:
        print(f"      remedy: {f.remedy}")


def check_user() -> Finding:
    uid = os.geteuid()
    if uid == 0:
        return Finding("ok", "running as root")
    return Finding(
        "ok",
        f"running as uid {uid}: rootless mode (sandboxes are units of your own user "
        "manager; see docs/without-root.md)",
    )


def check_cgroups() -> Finding:
    from sandboxed.systemd.cgroups import cgroup_mounts

    try:
        layout, mounts = cgroup_mounts()
    except SandboxError as e:
        return Finding("FAIL", str(e).splitlines()[0], "mount cgroup2 at /sys/fs/cgroup")
    if layout == "unified":
        return Finding("ok", "cgroup layout: unified (cgroup2 at /sys/fs/cgroup)")
    v1 = sorted(m.name for m in mounts if m.type == "cgroup")
    v2 = [m.name for m in mounts if m.type == "cgroup2"]
    extra = f" + cgroup2 at /sys/fs/cgroup/{v2[0]}" if v2 else ""
    return Finding(
        "note",
        f"cgroup layout: {layout} (cgroup v1: {', '.join(v1)}{extra}); BPF-based directives "
        "(IPAddressDeny=, SocketBindDeny=, RestrictFileSystems=) may not be enforced",
    )


def locate_manager(start: bool) -> tuple[list[Finding], Any]:
    """Findings about the manager, and a ManagerClient (or None if none is reachable)."""
    from sandboxed.systemd import embedded, locate
    from sandboxed.systemd.bus import ManagerClient

    found: list[Finding] = []
    env = os.environ.get(locate.ENV_ADDRESS)
    root = os.geteuid() == 0
    if root and not env and not locate.host_systemd_running() and embedded.status() is None:
        if not start:
            found.append(
                Finding(
                    "warn",
                    "PID 1 is not systemd and the embedded manager is not running "
                    "(the directive checks are skipped)",
                    "`sandboxed embedded start`, or let the first sandboxed call start it",
                )
            )
            return found, None
        found.append(
            Finding("note", "started the embedded manager (`sandboxed embedded stop` stops it)")
        )
    try:
        loc = locate.current()
        client = ManagerClient(loc.address)
        version = client.version
        manager_uid = client.manager_uid
    except SandboxError as e:
        found.append(
            Finding(
                "FAIL",
                f"no service manager reachable: {str(e).splitlines()[0]}",
                f"start one (`sandboxed embedded start`) or set {locate.ENV_ADDRESS}"
                if root
                else "log in through a systemd session (your user manager), run as root, "
                f"or set {locate.ENV_ADDRESS}",
            )
        )
        return found, None
    how = {
        "explicit": "given with --manager",
        "environment": f"from {locate.ENV_ADDRESS}",
        "user": "your user manager",
        "host": "the host's systemd (PID 1)",
        "embedded": "the embedded manager (PID 1 is not systemd)",
    }.get(loc.kind, loc.kind)
    if manager_uid != 0:
        how += f", the user manager of uid {manager_uid}"
    found.append(Finding("ok", f"manager: systemd {version}, {how}, at {loc.address}"))
    if client.version_number and client.version_number < 245:
        found.append(
            Finding(
                "warn",
                f"systemd {version} is older than 245: many directives are unknown to it",
                "use a distribution with systemd 245 or later",
            )
        )
    return found, client


def check_reach(user: str = "nobody") -> list[Finding]:
    """Can ``user`` load this interpreter, its packages and the current directory?"""
    from sandboxed._errors import UnreachableCodeError
    from sandboxed.runtime.reach import Identity, blocking_ancestor, needed_paths, plan

    if not user.isdigit():
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            return [
                Finding(
                    "FAIL",
                    f"user {user!r} does not exist on this machine: a unit with User={user} "
                    "would not start",
                    "name an existing user (nobody is on every system), a numeric uid, "
                    "or DynamicUser=yes",
                )
            ]
    who = Identity.of(user)
    cwd = os.path.realpath(os.getcwd())
    required, optional = needed_paths([cwd])
    out = []
    for label, subset in (
        (f"the interpreter ({sys.executable}) and its packages", required),
        (f"the current project ({cwd})", [cwd]),
    ):
        try:
            r = plan(subset, who, "yes")
        except UnreachableCodeError as e:
            out.append(Finding("FAIL", f"{label}: not reachable by {user}: {e.reason}", e.remedy))
            continue
        blocked = sorted({b for p in subset if (b := blocking_ancestor(p, who)) is not None})
        if blocked:
            out.append(
                Finding(
                    "ok",
                    f"{label}: reachable by {user} through read-only bind mounts "
                    f"({', '.join(blocked)} is not traversable by {user}; "
                    f"{len(r.binds)} director{'y' if len(r.binds) == 1 else 'ies'} bound)",
                )
            )
        else:
            out.append(Finding("ok", f"{label}: readable by {user}"))
    del optional  # other sys.path entries: only the calls whose code lives there need them
    return out


def _oneshot(
    client: Any, directive: str, argv: list[str], extra: Sequence[str] = ()
) -> tuple[str, str]:
    """Start a oneshot unit with ``directive``; ("ok" | "exit N" | "rejected", detail)."""
    from sandboxed._errors import DirectiveRejectedError, UnitFailedError
    from sandboxed.directives.directive import Directive

    name = f"sandboxed-doctor-{os.getpid()}-{secrets.token_hex(3)}.service"
    props = [
        ("Description", "s", f"sandboxed doctor: {directive}"),
        ("Type", "s", "oneshot"),
        ("ExecStart", "a(sasb)", [(argv[0], argv, False)]),
        ("RuntimeMaxUSec", "t", 15_000_000),
        *Directive.parse(directive).properties(),
        *(
            p
            for e in extra
            if e.split("=")[0] != directive.split("=")[0]
            for p in Directive.parse(e).properties()
        ),
    ]
    try:
        client.start_transient_unit(name, props, timeout=30)
        return "ok", ""
    except DirectiveRejectedError as e:
        return "rejected", str(e).splitlines()[0]
    except UnitFailedError:
        try:
            svc = client.get_unit_properties(name, "org.freedesktop.systemd1.Service")
        except SandboxError:
            return "rejected", "the unit failed"
        code, status = int(svc.get("ExecMainCode", 0)), int(svc.get("ExecMainStatus", 0))
        if code == 1 and status == 1:
            return "exit 1", ""
        if code == 1 and status >= 200:
            return "rejected", f"the unit could not start a process (exit status {status})"
        return "killed", f"signal {status}" if code != 1 else f"exit {status}"
    finally:
        client.reset_failed_unit(name)


def check_rootless(client: Any) -> list[Finding]:
    """What rootless mode adds and refuses on this host (nothing for a system manager)."""
    from sandboxed.directives.rootless import CONTROLLER
    from sandboxed.runtime.rootless import user_manager_host

    host = user_manager_host(client)
    if host is None:
        return []
    who = f"the user manager of uid {host.uid}"
    out = [
        Finding(
            "ok",
            "rootless: PrivateUsers=yes is added to every sandbox, so namespace directives "
            "(PrivateNetwork=, ProtectSystem=, PrivateTmp=...) hold; "
            f"{host.runtime_dir} is hidden and /sys/fs/cgroup read-only in each",
        )
    ]
    budgets = {"cpu": "CPUQuota=", "memory": "MemoryMax=", "pids": "TasksMax="}
    held = host.delegated or frozenset()
    missing = [c for c in budgets if c not in held]
    if missing:
        names = ", ".join(n for c, n in budgets.items() if c in missing)
        why = (
            f"cannot check delegation: {host.why_not}"
            if host.delegated is None
            else (f"{', '.join(missing)} not delegated to {who} ({host.why_not})")
        )
        out.append(
            Finding(
                "warn",
                f"rootless: {names} (and the other {', '.join(missing)} directives) are "
                f"refused: {why}",
                "run as root for budgets here (on a pure cgroup2 host systemd delegates cpu, "
                "memory and pids to user@.service)",
            )
        )
    else:
        out.append(Finding("ok", f"rootless: {', '.join(budgets.values())} hold (delegated)"))
    others = sorted({c for c in CONTROLLER.values()} - set(budgets) - held)
    out.append(
        Finding(
            "note",
            "rootless: User=, Group=, DynamicUser= need root and are refused; ProtectProc=, "
            "ProcSubset=, RemoveIPC= are not available to user managers; IPAddressDeny=, "
            "SocketBindDeny=, DeviceAllow= need BPF; "
            + (f"{', '.join(others)} controllers not delegated; " if others else "")
            + "Hardened runs in its rootless form (docs/without-root.md)",
        )
    )
    return out


def check_directives(client: Any) -> list[Finding]:
    from sandboxed.directives.rootless import refusal
    from sandboxed.runtime.rootless import user_manager_host

    exe = os.path.realpath(sys.executable)
    out: list[Finding] = []
    host = user_manager_host(client)
    acceptance: tuple[str, ...] = ACCEPTANCE
    enforcement = ENFORCEMENT
    extra: list[str] = []
    if host is not None:
        # Rootless: what the user manager cannot hold is refused (check_rootless says
        # so); the rest is tried as a sandbox would send it, under PrivateUsers=yes.
        def holds(d: str) -> bool:
            name, _, value = d.partition("=")
            return refusal(name, value, host) is None and name != "ProtectControlGroups"

        acceptance = tuple(d for d in ACCEPTANCE if holds(d))
        enforcement = tuple(e for e in ENFORCEMENT if holds(e[0]))
        extra = ["PrivateUsers=yes"]
    with ThreadPoolExecutor(8) as pool:
        accepted = list(
            pool.map(lambda d: (d, _oneshot(client, d, ["/bin/true"], extra)), acceptance)
        )
        enforced = list(
            pool.map(
                lambda e: (e, _oneshot(client, e[0], [exe, "-I", "-S", "-c", e[1]], extra)),
                enforcement,
            )
        )
    rejected = [(d, detail) for d, (res, detail) in accepted if res == "rejected"]
    for d, detail in rejected:
        out.append(
            Finding(
                "FAIL",
                f"{d} is rejected by this systemd: {detail}",
                "don't use it (or a preset that sets it) here; in a container, give it the "
                "privileges systemd needs (CAP_SYS_ADMIN, an unconfined seccomp profile)",
            )
        )
    if not rejected:
        how = " (with PrivateUsers=yes; the rest is refused in rootless mode)" if extra else ""
        out.append(
            Finding("ok", f"{len(acceptance)} doubtful directives accepted and applied{how}")
        )
    from sandboxed.directives.enforcement import unenforceable
    from sandboxed.runtime.facts import host_facts

    # What a sandbox would refuse here (the rule sandboxed applies before any unit
    # starts), beside what the probe saw: the two must agree.
    predicted = dict(
        unenforceable([e[0].split("=", 1)[0] for e in enforcement], host_facts(client))
    )
    for (d, _probe, why), (res, detail) in enforced:
        name = d.split("=", 1)[0]
        rule = predicted.get(name)
        if rule:
            why = (
                f"{why}; sandboxed refuses it here ({rule}) unless a sandbox says "
                f"accept_unenforced=[{name!r}]"
            )
        if res == "ok" or (res == "killed" and name == "MemoryMax"):
            out.append(Finding("ok", f"{d} enforced (probed from inside a unit)"))
            if rule:
                out.append(
                    Finding(
                        "warn",
                        f"{d} was enforced, but sandboxed's rule says it cannot be: {rule}",
                        "report it: the rule in sandboxed/directives/enforcement.py is wrong",
                    )
                )
        elif res == "exit 1":
            out.append(Finding("warn", f"{d} is accepted but NOT enforced here", why))
        else:
            out.append(Finding("FAIL", f"{d} could not be probed: {detail or res}", why))
    return out


def _default_reach_user() -> str:
    if os.geteuid() == 0:
        return "nobody"
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-start",
        action="store_true",
        help="do not start the embedded manager when none is running",
    )
    p.add_argument(
        "--user",
        default=None,
        help="the user whose reach to check (default: nobody as root, yourself otherwise)",
    )
    p.add_argument(
        "--quick", action="store_true", help="skip the directive checks (no units are started)"
    )


def _doctor(ns: argparse.Namespace) -> int:
    findings: list[Finding] = []

    def emit(f: Finding) -> None:
        findings.append(f)
        _print(f)
        sys.stdout.flush()

    checks: list[Callable[[], list[Finding]]] = [
        lambda: [check_user()],
        lambda: [check_cgroups()],
        lambda: check_reach(ns.user or _default_reach_user()),
    ]
    for check in checks:
        for f in check():
            emit(f)
    manager_findings, client = locate_manager(start=not ns.no_start)
    for f in manager_findings:
        emit(f)
    if client is not None:
        try:
            try:
                rootless = check_rootless(client)
            except SandboxError as e:
                rootless = [Finding("FAIL", f"rootless: cannot inspect the user manager: {e}")]
            for f in rootless:
                emit(f)
            if not ns.quick:
                for f in check_directives(client):
                    emit(f)
        finally:
            client.close()
    problems = [f for f in findings if f.level in ("warn", "FAIL")]
    failures = [f for f in findings if f.level == "FAIL"]
    print(
        f"{len(problems)} problem(s), {len(failures)} of them blocking"
        if problems
        else "no problems found"
    )
    return 1 if failures else 0


COMMAND = Command(
    "check what this machine offers a sandbox, with a remedy for each problem",
    _doctor_args,
    _doctor,
)
