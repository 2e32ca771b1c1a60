"""Evaluate untrusted or generated code, and get back only plain data.

Code written by a user, a model or a plugin runs in a sandbox with the
``Hardened`` preset: an unprivileged dynamic user with no capabilities, a
system call filter, no network, a read-only system, hidden homes and /tmp,
plus a per-call time limit and a memory budget.

``Hardened`` also turns on *safe results*: what the sandbox returns is
decoded as plain data (None, bool, numbers, str, bytes, lists, tuples,
dicts, sets) and never unpickled, because unpickling bytes that untrusted
code produced would run code in *this* process. A result that is not plain
data raises ``UnsafeResultError`` instead. (``trusted=False`` gives safe
results without the rest of ``Hardened``.)

Run: python recipes/untrusted_code.py
"""

from __future__ import annotations

from sandboxed import (
    Hardened,
    Memory,
    RemoteError,
    SandboxMemoryError,
    SandboxTimeoutError,
    Timeout,
    UnsafeResultError,
    sandboxed,
)


@sandboxed(Hardened, Timeout(5), Memory("256M"))
def evaluate(source: str) -> object:
    """Run ``source`` and return the value of its variable ``result``."""
    namespace: dict[str, object] = {}
    exec(source, namespace)
    return namespace.get("result")


SUBMISSIONS = {
    # an honest submission: its result is plain data and comes back as is
    "sum of squares": "result = sum(i * i for i in range(10))",
    # reads a secret? /root is hidden, and the dynamic user could not read it anyway
    "read a secret": "result = open('/root/.bash_history').read()",
    # phones home? there is no network in the sandbox
    "phone home": (
        "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=1)\nresult = 'sent'"
    ),
    # returns an object whose unpickling would run code in the caller:
    # in safe-result mode it is refused, never unpickled
    "malicious pickle": (
        "import os\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        "        return (os.system, ('echo pwned > /tmp/pwned',))\n"
        "result = Evil()"
    ),
    # never ends: stopped after the 5 s timeout
    "endless loop": "while True: pass",
    # eats memory: the kernel's OOM killer stops it at 256 MiB
    "memory hog": "result = bytearray(1 << 30)",
}


def main() -> None:
    outcomes = {}
    for name, source in SUBMISSIONS.items():
        try:
            outcomes[name] = f"ok: {evaluate(source)!r}"
        except UnsafeResultError as e:
            outcomes[name] = f"refused result: {e}"
        except SandboxTimeoutError as e:
            outcomes[name] = f"timed out: {e}"
        except SandboxMemoryError as e:
            outcomes[name] = f"out of memory: {e}"
        except RemoteError as e:
            # The submission's own exception. In safe-result mode it is not unpickled
            # either: it comes back as RemoteError with its type name, message and
            # traceback text.
            outcomes[name] = f"failed: {e.type_name}: {e.message}"
        print(f"{name:>16}: {outcomes[name]}")

    assert outcomes["sum of squares"] == "ok: 285"
    assert outcomes["read a secret"].startswith(("failed: FileNotFoundError", "failed: Permission"))
    assert outcomes["phone home"].startswith("failed: OSError")
    assert outcomes["malicious pickle"].startswith("refused result")
    assert outcomes["endless loop"].startswith("timed out")
    assert outcomes["memory hog"].startswith(("out of memory", "failed: MemoryError"))
    print("all submissions handled safely")


if __name__ == "__main__":
    main()
