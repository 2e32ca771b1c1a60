"""The same sandboxed function on a Dask cluster.

A decorated function is an ordinary picklable callable: submitted to a
``dask.distributed`` cluster it runs, sandboxed, on whichever worker executes
it, and that worker creates (and caches) the sandbox unit on its own host.
There is nothing to set up on the workers beyond installing sandboxed; each
worker's units are stopped when the worker exits.

Define the function in a module the workers can import (as a real project
does): it then travels by reference and the worker imports the decorated
function itself. A function defined in ``__main__`` or a lambda travels by
value through Dask's cloudpickle, which at present unwraps the decorator and
ships the bare function: it would run *unsandboxed* (see the Dask page of the
docs). That is why this script, run as ``__main__``, imports itself by name.

Here a LocalCluster of two worker processes stands in for a real cluster; with
a real one, point ``Client`` at its scheduler instead.

Run: python recipes/dask_cluster.py
"""

from __future__ import annotations

import os
import socket

from distributed import Client, LocalCluster

from sandboxed import NoNetwork, ReadOnly, sandboxed


@sandboxed(NoNetwork, ReadOnly, User="nobody", CPUQuota=0.5)
def score(document: str) -> dict[str, object]:
    """Score one document (runs in a sandbox on the Dask worker)."""
    words = document.split()
    with open("/proc/self/cgroup") as f:
        unit = next(p for line in f for p in line.strip().split("/") if p.endswith(".service"))
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1)
        network = "reachable"
    except OSError:
        network = "none"
    return {
        "words": len(words),
        "longest": max(words, key=len),
        "uid": os.getuid(),
        "network": network,
        "unit": unit,
    }


DOCUMENTS = [
    "systemd runs the worker as the unit's own process",
    "every directive applies by construction",
    "results from untrusted code are untrusted input",
    "a decorated function is an ordinary picklable callable",
]


def main() -> None:
    # processes=True: real worker processes, as on a cluster; no dashboard (nothing to serve).
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(score, DOCUMENTS, pure=False)
        results = client.gather(futures)
        for r in results:
            print(
                f"{r['words']:2} words, longest {r['longest']!r:14} uid {r['uid']} "
                f"network {r['network']}  in {r['unit']}"
            )
        assert all(r["uid"] == 65534 and r["network"] == "none" for r in results)
        # The unit name embeds the pid of the process that created it: the Dask worker.
        worker_pids = set(client.run(os.getpid).values())
        unit_pids = {int(str(r["unit"]).split("-")[2]) for r in results}
        assert unit_pids <= worker_pids and os.getpid() not in unit_pids
        print(f"ran in {len({r['unit'] for r in results})} unit(s) on {len(worker_pids)} workers")


if __name__ == "__main__":
    # Import this file as the module ``dask_cluster`` (its directory is on sys.path, on
    # the workers too), so that ``score`` pickles by reference: see the docstring.
    import dask_cluster

    dask_cluster.main()
