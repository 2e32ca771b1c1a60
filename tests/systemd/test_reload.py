"""The manager is not forever: sandboxes across daemon-reload and daemon-reexec.

Both ways of finding the manager run these: the embedded one, and (in the
host-path pass of CI) a manager that is PID 1. Reloads happen on real hosts
all the time (package upgrades run ``systemctl daemon-reload``); a sandbox must
keep every limit through them, and a start that meets one must succeed.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator

import probes
import pytest

from sandboxed import ManagerError, SandboxMemoryError, configure
from sandboxed import sandboxed as sandbox

pytestmark = pytest.mark.usefixtures("systemd", "manager_version")


@pytest.fixture(scope="module")
def manager_version(systemd: object) -> int:
    return int(systemd.client().version_number)  # type: ignore[attr-defined]


LIMITS = {"MemoryMax": "200M", "TasksMax": 40, "CPUQuota": "20%"}
EXPECTED = {"memory": 200 << 20, "pids": 40, "cpu": 200_000}


def _limited(purpose: str) -> object:
    return sandbox(User="nobody", Environment=f"PURPOSE={purpose}-{os.getpid()}", **LIMITS)


def _assert_limits_hold(fn_limits: object, fn_alloc: object, fn_fork: object) -> None:
    assert fn_limits() == EXPECTED  # type: ignore[operator]
    with pytest.raises(SandboxMemoryError):
        fn_alloc(400)  # type: ignore[operator]
    assert fn_fork(100) < 40  # type: ignore[operator]


@pytest.mark.parametrize("verb", ["daemon-reload", "daemon-reexec"])
def test_memory_tasks_and_cpu_limits_hold_through(systemd: object, verb: str) -> None:
    deco = _limited(f"limits-through-{verb}")
    limits = deco(probes.own_cgroup_limits)  # type: ignore[operator]
    assert limits() == EXPECTED
    unit = limits.sandbox.unit_name
    # Calls that run in the unit while the manager reloads, and probe it after.
    outcomes: dict[str, object] = {}

    def in_flight(key: str, fn: object, *args: object) -> None:
        try:
            outcomes[key] = fn(*args)  # type: ignore[operator]
        except BaseException as e:  # noqa: BLE001 - inspected below
            outcomes[key] = e

    threads = [
        threading.Thread(
            target=in_flight,
            args=("limits", deco(probes.limits_and_forks_after), 3.0, 100),  # type: ignore[operator]
        ),
        threading.Thread(
            target=in_flight,
            args=("alloc", deco(probes.allocate_after), 1.5, 400),  # type: ignore[operator]
        ),
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    r = systemd.run(["systemctl", verb])  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    show = systemd.run(  # type: ignore[attr-defined]
        ["systemctl", "show", "-p", "LoadState,MemoryMax,TasksMax,CPUQuotaPerSecUSec", unit]
    )
    assert sorted(show.stdout.split()) == [
        "CPUQuotaPerSecUSec=200ms",
        "LoadState=loaded",
        f"MemoryMax={200 << 20}",
        "TasksMax=40",
    ]
    for t in threads:
        t.join(60)
    # Probed from inside, after the reload, by calls that ran through it.
    seen, forked = outcomes["limits"]  # type: ignore[misc]
    assert seen == EXPECTED
    assert forked < 40
    assert isinstance(outcomes["alloc"], SandboxMemoryError)
    # And the calls after it: in this unit, or in a replacement if it lost a setting
    # in the reload (systemd 252 loses RestrictNamespaces=yes: see still_as_started).
    assert limits() == EXPECTED
    alloc = deco(probes.allocate)  # type: ignore[operator]
    fork = deco(probes.fork_many)  # type: ignore[operator]
    _assert_limits_hold(limits, alloc, fork)


def _transient_files(systemd: object) -> set[str]:
    r = systemd.run(["ls", "/run/systemd/transient"])  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_reloads_leave_no_orphaned_transient_unit_files(systemd: object) -> None:
    names = []
    for i in range(6):
        fn = sandbox(User="nobody", Environment=f"PURPOSE=orphans-{os.getpid()}-{i}")(probes.cwd)
        fn()
        names.append(fn.sandbox.unit_name)
        assert f"{names[-1]}" in _transient_files(systemd)
        r = systemd.run(["systemctl", "daemon-reexec" if i % 2 else "daemon-reload"])  # type: ignore[attr-defined]
        assert r.returncode == 0, r.stderr
        fn.sandbox.shutdown()
    deadline = time.monotonic() + 15
    while set(names) & _transient_files(systemd) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(names) & _transient_files(systemd)


def _manager_reload(systemd: object, counter: str = "generation") -> None:
    """Reload the manager, and return once the library knows its units need a check.

    Over a peer-to-peer connection the manager announces the end of a reload
    (``Reloading(false)``) before it answers, in order on the one connection, so the
    library's own connection sends it. On a message bus, where it announces nothing
    to an unsubscribed client, ``systemctl daemon-reload`` sends it, as a package
    upgrade does (from the embedded manager's namespaces: see
    test_a_reload_asked_on_the_embedded_bus_from_outside_leaves_its_pid_1_running),
    and the library's periodic recheck is waited for. ``counter`` is the
    runtime.client counter waited for: ``generation``, or ``announced`` (bumped only
    by a reload the library learnt of, not by the blind recheck).
    """
    from sandboxed.runtime import client

    before = getattr(client, counter)
    c = client.manager_client()
    if c.peer_to_peer:
        c.manager_call("Reload")
    else:
        r = systemd.run(["systemctl", "daemon-reload"])  # type: ignore[attr-defined]
        assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while getattr(client, counter) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert getattr(client, counter) != before


def test_a_reload_is_learnt_of_on_every_connection_even_one_put_aside_and_brought_back(
    systemd: object,
) -> None:
    # On a peer-to-peer connection the manager announces it; on a message bus (the
    # embedded path) it announces nothing to an unsubscribed client, and the library
    # reads when the manager last loaded its units. A client put aside (as the
    # unreachable_manager fixture does) and brought back keeps learning.
    from sandboxed.runtime import client

    shared = client.manager_client()
    with client._client_lock:
        client._client = None
    time.sleep(client.RECHECK_SECONDS * 1.5)
    with client._client_lock:
        client._client = shared
    # The announcement count: what only a real reload (not the blind recheck) bumps.
    _manager_reload(systemd, counter="announced")


def test_a_unit_that_lost_its_configuration_in_a_reload_is_replaced_before_the_next_call(
    systemd: object,
) -> None:
    deco = _limited("lost-configuration")
    limits = deco(probes.own_cgroup_limits)  # type: ignore[operator]
    alloc = deco(probes.allocate)  # type: ignore[operator]
    fork = deco(probes.fork_many)  # type: ignore[operator]
    assert limits() == EXPECTED
    unit = limits.sandbox.unit_name
    # What an admin's cleanup (or a manager without the transient directory on its
    # unit path) does: the unit's file is gone, so a reload leaves it not-found,
    # without any of its limits, with its processes still running.
    r = systemd.run(["rm", f"/run/systemd/transient/{unit}"])  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    _manager_reload(systemd)
    show = systemd.run(["systemctl", "show", "-p", "LoadState,MemoryMax", unit])  # type: ignore[attr-defined]
    assert "LoadState=not-found" in show.stdout  # the control: this unit is weakened now
    assert limits() == EXPECTED
    assert limits.sandbox.unit_name != unit
    _assert_limits_hold(limits, alloc, fork)
    # The weakened unit was stopped, not left running.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state = systemd.run(["systemctl", "show", "-p", "ActiveState", unit]).stdout  # type: ignore[attr-defined]
        if "ActiveState=inactive" in state or "ActiveState=failed" in state:
            break
        time.sleep(0.1)
    assert "ActiveState=active" not in state


def test_a_reload_asked_on_the_embedded_bus_from_outside_leaves_its_pid_1_running(
    systemd: object, manager_version: int
) -> None:
    """systemd 254 aborts on a Reload() or Reexecute() from a bus client whose PID it
    cannot see, and every caller of the embedded manager from the host is one (its bus
    reports PID 0): on those versions the embedded bus refuses both calls."""
    from sandboxed._errors import DBusError
    from sandboxed.systemd import embedded

    if systemd.location.kind != "embedded":  # type: ignore[attr-defined]
        pytest.skip("only the embedded manager has callers outside its PID namespace")
    before = embedded.status()
    assert before is not None
    # The version the embedded bus's policy is chosen by is the manager's own.
    assert embedded.systemd_version(embedded.find_systemd()) == manager_version

    def ident(x: int) -> int:
        return x

    fn = sandbox(User="nobody", Environment=f"PURPOSE=bus-reload-{os.getpid()}")(ident)
    assert fn(1) == 1
    unit = fn.sandbox.unit_name
    c = systemd.client()  # type: ignore[attr-defined]
    assert not c.peer_to_peer
    if manager_version in embedded.REFUSE_RELOAD_ON_BUS:
        for method in ("Reload", "Reexecute"):
            with pytest.raises(DBusError) as info:
                c.manager_call(method)
            assert info.value.name == "org.freedesktop.DBus.Error.AccessDenied", method
    else:
        assert c.manager_call("Reload") == ()
    # The same manager, and the sandbox started before it still serves calls.
    assert embedded.status() == before
    assert fn(2) == 2
    assert fn.sandbox.unit_name == unit
    r = systemd.run(["systemctl", "daemon-reload"])  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    assert embedded.status() == before


@pytest.fixture
def unreachable_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    from sandboxed.runtime import client
    from sandboxed.systemd import bus, locate

    bound = 1.5
    monkeypatch.setattr(bus, "MANAGER_RETRY_SECONDS", bound)
    with client._client_lock:
        saved = client._client
        client._client = None
    configure(manager=f"/run/sandboxed-no-manager-{os.getpid()}.sock")
    yield bound
    configure(None)
    locate.forget()
    with client._client_lock:
        client._client = saved
    # Its periodic recheck goes on while it is open, though it was put aside: see
    # test_a_reload_is_learnt_of_on_every_connection_even_one_put_aside_and_brought_back.


def test_a_start_without_a_manager_retries_for_a_bounded_time_then_raises_a_manager_error(
    unreachable_manager: float,
) -> None:
    fn = sandbox(User="nobody", Environment=f"PURPOSE=unreachable-{os.getpid()}")(probes.cwd)
    t0 = time.monotonic()
    with pytest.raises(ManagerError) as info:
        fn()
    waited = time.monotonic() - t0
    assert waited >= unreachable_manager  # it did retry, for the whole bound
    assert "sandboxed-no-manager" in str(info.value)
    assert type(info.value).__name__ != "DBusError"


# Its run time is that of 500 cold starts on the machine: about a minute when quiet.
@pytest.mark.timeout(900)
def test_500_cold_starts_beside_reloads_and_reexecs_in_a_loop_all_succeed(systemd: object) -> None:
    stop = threading.Event()
    verbs: collections.Counter[str] = collections.Counter()
    churn_errors: list[str] = []

    def churn() -> None:
        i = 0
        while not stop.is_set():
            verb = ("daemon-reload", "daemon-reexec")[i % 2]
            r = systemd.run(["systemctl", verb])  # type: ignore[attr-defined]
            if r.returncode == 0:
                verbs[verb] += 1
            else:
                churn_errors.append(r.stderr)
            i += 1
            stop.wait(0.3)

    def ident(x: int) -> int:
        return x

    failures: collections.Counter[str] = collections.Counter()
    done = 0
    lock = threading.Lock()

    def cold_starts(worker: int, n: int) -> None:
        nonlocal done
        fn = sandbox(User="nobody", Environment=f"PURPOSE=churn-{os.getpid()}-{worker}")(ident)
        for i in range(n):
            try:
                assert fn(i) == i
                with lock:
                    done += 1
            except Exception as e:  # noqa: BLE001 - counted, reported below
                with lock:
                    failures[f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"] += 1
            fn.sandbox.shutdown(wait=False)

    t = threading.Thread(target=churn)
    t.start()
    try:
        workers = [threading.Thread(target=cold_starts, args=(w, 125)) for w in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        stop.set()
        t.join()
    assert not failures, dict(failures)
    assert done == 500
    assert not churn_errors
    # The starts really ran beside both kinds of restart.
    assert verbs["daemon-reload"] >= 10 and verbs["daemon-reexec"] >= 10, dict(verbs)


def test_a_unit_whose_restrict_namespaces_a_reload_undid_is_replaced(systemd: object) -> None:
    fn = sandbox(
        User="nobody", RestrictNamespaces=True, Environment=f"PURPOSE=restrict-ns-{os.getpid()}"
    )(probes.cwd)
    fn()
    unit = fn.sandbox.unit_name
    before = systemd.run(["systemctl", "show", "-p", "RestrictNamespaces", unit]).stdout  # type: ignore[attr-defined]
    assert before.strip() == "RestrictNamespaces=yes"
    _manager_reload(systemd)
    after = systemd.run(["systemctl", "show", "-p", "RestrictNamespaces", unit]).stdout  # type: ignore[attr-defined]
    fn()
    if after.strip() == "RestrictNamespaces=yes":
        assert fn.sandbox.unit_name == unit  # this systemd keeps it: nothing to replace
    else:
        # systemd 252 writes RestrictNamespaces=yes to the transient file as an empty
        # assignment, read back as "no": the weakened unit must not serve the call.
        assert fn.sandbox.unit_name != unit
        now = systemd.run(["systemctl", "show", "-p", "RestrictNamespaces", fn.sandbox.unit_name])  # type: ignore[attr-defined]
        assert now.stdout.strip() == "RestrictNamespaces=yes"
