"""Sharing sandboxes: workers handed over first come, first served; many option sets.

Against the real systemd the suite uses. No timing assertions: orders and counts.
"""

from __future__ import annotations

import gc
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandboxed as sbx
from sandboxed import SandboxError, sandboxed

pytestmark = pytest.mark.systemd


@pytest.fixture(autouse=True)
def _stop_units(systemd: Any) -> Iterator[None]:
    yield
    sbx.shutdown()


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thread_calling_in_a_loop_does_not_starve_another_threads_call() -> None:
    fn = sandboxed(Environment=f"SBX_CASE=fifo-{uuid.uuid4().hex[:6]}", workers=1)(nap)
    fn(0)  # the unit and its worker exist
    loops = 60
    done = 0
    started = threading.Event()
    seen_at: list[int] = []

    def looper() -> None:
        nonlocal done
        for i in range(loops):
            fn(0.01)
            done += 1
            if i == 2:
                started.set()

    def single() -> None:
        started.wait()
        at_start = done
        fn(0)
        seen_at.extend([at_start, done])

    threads = [threading.Thread(target=looper), threading.Thread(target=single)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    at_start, at_end = seen_at
    # First come, first served: the single call waits for the loop's call in progress
    # (and at most one more that had already queued), not for the rest of the loop.
    assert at_end - at_start <= 2, (at_start, at_end, loops)


def test_thirty_two_threads_on_two_workers_all_get_their_calls_in_order_of_arrival() -> None:
    fn = sandboxed(Environment=f"SBX_CASE=fifo32-{uuid.uuid4().hex[:6]}", workers=2)(nap)
    fn(0)
    lock = threading.Lock()
    finished: list[int] = []
    barrier = threading.Barrier(32)

    def run(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            fn(0.002)
        with lock:
            finished.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(finished) == list(range(32))
    assert fn.sandbox._busy == 0


def test_a_shut_down_sandbox_leaves_the_registry(systemd: Any) -> None:
    from sandboxed.runtime import registry

    fn = sandboxed(Environment=f"SBX_CASE=drop-{uuid.uuid4().hex[:6]}")(nap)
    fn(0)
    sb = fn.sandbox
    assert sb in registry.live()
    sb.shutdown()
    assert sb not in registry.live()
    fn(0)  # a new sandbox for the same options
    assert fn.sandbox is not sb


def test_stopping_a_unit_closes_its_descriptors_without_the_garbage_collector() -> None:
    fn = sandboxed(Environment=f"SBX_CASE=fds-{uuid.uuid4().hex[:6]}", workers=2)(nap)
    fn(0)  # the manager connection and lazy imports are in place
    fn.sandbox.shutdown()
    gc.collect()
    gc.disable()
    try:
        before = open_fds()
        for _ in range(3):
            fn(0)
            fn.sandbox.shutdown()
        after = open_fds()
    finally:
        gc.enable()
    assert after <= before


def test_the_number_of_live_units_is_bounded_and_an_evicted_option_set_starts_again(
    systemd: Any,
) -> None:
    from sandboxed.runtime import registry

    old = registry.limits()
    sbx.configure_cache(max_units=2)
    try:
        fns = [
            sandboxed(Environment=f"SBX_CASE=bound-{i}-{uuid.uuid4().hex[:6]}")(nap)
            for i in range(4)
        ]
        pids = [fn(0) for fn in fns]
        running = [fn for fn in fns if fn.sandbox.unit_name is not None]
        assert len(running) <= 2
        assert fns[0].sandbox.unit_name is None  # the least recently used went first
        assert fns[0](0) != pids[0]  # and it comes back on its next call
    finally:
        sbx.configure_cache(**old)


def test_an_idle_unit_is_stopped_after_its_lifetime() -> None:
    from sandboxed.runtime import registry

    old = registry.limits()
    sbx.configure_cache(idle_timeout=0.5)
    try:
        fn = sandboxed(Environment=f"SBX_CASE=idle-{uuid.uuid4().hex[:6]}")(nap)
        first = fn(0)
        deadline = time.monotonic() + 60
        while fn.sandbox.unit_name is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fn.sandbox.unit_name is None
        assert fn(0) != first
    finally:
        sbx.configure_cache(**old)


def test_cache_limits_are_checked(systemd: Any) -> None:
    with pytest.raises(ValueError, match="max_units"):
        sbx.configure_cache(max_units=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        sbx.configure_cache(idle_timeout=-1)


SCRIPT = """
import os, resource, sys
import sandboxed
from sandboxed import sandboxed as box

soft = int(sys.argv[1])
n = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

def pid():
    return os.getpid()

ok = 0
for i in range(n):
    fn = box(Environment=f"SBX_CASE=many-{os.getpid()}-{i}")(pid)
    fn()
    ok += 1
print("OK", ok, len(os.listdir("/proc/self/fd")))
"""


def test_many_option_sets_one_after_another_fit_a_small_descriptor_limit(
    systemd: Any, tmp_path: Path
) -> None:
    script = tmp_path / "many.py"
    script.write_text(textwrap.dedent(SCRIPT))
    # 100 option sets under a limit of 128 descriptors: each live unit holds several.
    out = subprocess.run(
        [sys.executable, str(script), "128", "100"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ok, fds = out.stdout.split()[1:3]
    assert int(ok) == 100
    assert int(fds) < 128


def test_running_out_of_descriptors_is_a_sandbox_error(systemd: Any) -> None:
    fn = sandboxed(Environment=f"SBX_CASE=emfile-{uuid.uuid4().hex[:6]}")(nap)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hog: list[int] = []
    try:
        while True:
            try:
                hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        with pytest.raises(SandboxError, match="descriptor"):
            fn(0)
    finally:
        for fd in hog:
            os.close(fd)
    assert fn(0) != os.getpid()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
