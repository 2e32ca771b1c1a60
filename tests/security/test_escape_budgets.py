"""CPU, memory and task budgets against code that tries to take more.

Figures come from inside the sandbox (CPU time of the process by getrusage,
against wall time), so they measure what the code actually got.
"""

from __future__ import annotations

import hashlib
import os
import resource
import threading
import time

import pytest
from escape_kit import in_sandbox

from sandboxed import CPU, Memory, SandboxError, Tasks

pytestmark = pytest.mark.systemd

QUOTA = 0.5
CPU_BOX = in_sandbox(CPU(QUOTA))
MEMORY_BOX = in_sandbox(Memory("64M"))
TASKS_LIMIT = 24
TASKS_BOX = in_sandbox(Tasks(TASKS_LIMIT))


def burn(threads: int, seconds: float) -> float:
    """Busy-loop ``threads`` threads (hashing releases the GIL) for ``seconds``; CPUs used."""
    block = os.urandom(1 << 20)
    stop = time.monotonic() + seconds

    def spin() -> None:
        while time.monotonic() < stop:
            hashlib.sha256(block).digest()

    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    workers = [threading.Thread(target=spin) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    used = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    return used / (time.monotonic() - start)


def test_the_cpu_quota_holds_under_a_busy_loop_of_several_threads() -> None:
    threads = 4
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: several threads could not exceed the quota anyway")
    # The control: unsandboxed, the loop takes more (the best of three, on a shared machine).
    assert max(burn(threads, 0.5) for _ in range(3)) > QUOTA * 1.5
    used = CPU_BOX(burn, threads, 3.0)
    assert used <= QUOTA * 1.10
    assert used >= QUOTA * 0.5  # and it did get (about) its share


def allocate(megabytes: int) -> int:
    chunks = []
    for _ in range(megabytes):
        chunk = bytearray(1 << 20)
        chunk[::4096] = b"x" * len(range(0, 1 << 20, 4096))  # touch every page
        chunks.append(chunk)
    return len(chunks)


def test_memory_beyond_the_limit_is_refused_and_the_unit_recovers() -> None:
    assert MEMORY_BOX(allocate, 16) == 16
    with pytest.raises(MemoryError):
        MEMORY_BOX(allocate, 256)
    assert MEMORY_BOX(allocate, 16) == 16


def fork_bomb(seconds: float) -> dict[str, int]:
    """Fork without end for ``seconds``: every child forks too, then all exit."""
    stop = time.monotonic() + seconds
    made = refused = 0
    children = []
    while time.monotonic() < stop:
        try:
            pid = os.fork()
        except BlockingIOError:  # EAGAIN: the task budget is spent
            refused += 1
            time.sleep(0.01)
            continue
        if pid == 0:
            # A child: keep forking (and never return into the worker).
            while time.monotonic() < stop:
                try:
                    if os.fork() == 0:
                        time.sleep(max(0.0, stop - time.monotonic()))
                        os._exit(0)
                except BlockingIOError:
                    time.sleep(0.01)
            os._exit(0)
        made += 1
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return {"made": made, "refused": refused}


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def spawn_threads(n: int) -> int:
    done = threading.Event()
    threads = [threading.Thread(target=done.wait) for _ in range(n)]
    for t in threads:
        t.start()
    done.set()
    for t in threads:
        t.join()
    return n


def test_a_fork_bomb_is_contained_by_the_task_limit_and_the_unit_recovers() -> None:
    outcome = TASKS_BOX(fork_bomb, 2.0)
    assert outcome["refused"] > 0  # it hit the ceiling...
    assert outcome["made"] < TASKS_LIMIT  # ...which its direct children alone show
    # Afterwards the bomb's processes are gone and the unit serves calls again.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert TASKS_BOX(spawn_threads, 8) == 8
            break
        except (SandboxError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_threads_beyond_the_task_limit_are_refused() -> None:
    with pytest.raises(RuntimeError, match="can't start new thread"):
        TASKS_BOX(spawn_threads, TASKS_LIMIT * 2)
    assert TASKS_BOX(spawn_threads, 4) == 4
