"""The concurrentd seed example, as written (import line aside).

Three CPU-bound tasks run as `nobody`, together held to 20 % of one CPU, with
only a loopback interface, a read-only root and a private /tmp that is gone
when the executor exits.
"""

import time

from sandboxed import TransientUnitPoolExecutor


def busy_cpu(timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        2**64 - 1


if __name__ == "__main__":
    with TransientUnitPoolExecutor(
        ns_options={
            "PrivateTmp": True,
            "PrivateNetwork": True,
            "CPUQuota": 0.2,
            "ProtectSystem": "strict",
            "User": "nobody",
        }
    ) as pool:
        print("bootstrap unit", pool.unit.Id.decode())
        pool.submit(busy_cpu, timeout=5)
        pool.submit(busy_cpu, timeout=10)
        pool.submit(busy_cpu, timeout=15)
