"""Drain benchmark: requests failed while pods leave, with Candor's drain handshake and without it.

    sudo .venv/bin/python bench/drain.py [--restarts 10] [--rate 100]

On the test node (tests/support/node.py, needs root): two 3-replica Deployments of the demo app, equal
but for Candor (the same readiness probe and CPU request): one with the sidecar injected by the chart's
webhook (the drain handshake in preStop, HAProxy's backend from `candor render`), one without Candor
(HAProxy's defaults).
HAProxy's servers follow each Service's EndpointSlices as haproxytech's controller does
(tests/support/endpoint_follower.py: pre-declared slots, `set server … addr`, a terminating endpoint put in
maint). A steady stream of requests goes to each, side by side, while both Deployments are restarted with
`kubectl rollout restart` again and again. Counted: failed requests, and requests HAProxy sent to a pod
after its app got SIGTERM. Target: 0 failed with Candor; the plain setup's count is the floor printed
beside it. Exits non-zero when the target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.drain_rig import Load, answered_after_sigterm, objects, rig
from tests.support.helm import install_chart
from tests.support.k8s_cluster import K8sCluster
from tests.support.k8s_processes import ensure_binaries
from tests.support.node import Node
from tests.support.ports import free_port
from tests.support.scratch import remove_scratch, scratch_dir

NS = "drain-bench"


def main() -> int:
    if os.geteuid() != 0:
        print(f"{Path(__file__).name}: the test node needs root (containerd, kubelet, an interface); run it as root")
        return 2
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second to each setup")
    args = parser.parse_args()
    workdir = scratch_dir("candor-bench-drain-")
    events = workdir / "events"
    events.mkdir()
    events.chmod(0o777)  # the apps run as uid 10001
    cluster = K8sCluster(workdir, ensure_binaries()).start()
    node = Node(cluster=cluster)
    try:
        node.start()
        install_chart(cluster, "candor-system")
        cluster.create_namespace(NS)
        cluster.apply(*objects(NS, events, replicas=3))
        for name in ("candor", "plain"):
            cluster.kubectl("rollout", "status", "-n", NS, f"deployment/{name}", "--timeout=300s")
        front_candor, front_plain = free_port(), free_port()
        with rig(cluster, NS, front_candor, front_plain) as (_haproxy, with_candor, with_plain):
            cluster.wait_until(lambda: len(with_candor.events) >= 3 and len(with_plain.events) >= 3, 120,
                               "both backends filled")
            began = time.monotonic()
            with Load(front_candor, args.rate) as candor, Load(front_plain, args.rate) as plain:
                for _ in range(args.restarts):
                    cluster.kubectl("rollout", "restart", "-n", NS, "deployment/candor", "deployment/plain")
                    for name in ("candor", "plain"):
                        cluster.kubectl("rollout", "status", "-n", NS, f"deployment/{name}", "--timeout=300s",
                                        timeout=330)
                # The last pods to leave are still terminating: keep the load on until they are gone.
                cluster.wait_until(
                    lambda: len(cluster.api("GET", f"/api/v1/namespaces/{NS}/pods").ok()["items"]) == 6,
                    180, "the replaced pods gone")
            took = time.monotonic() - began
    finally:
        node.stop()
        cluster.stop()

    for label, load in (("Candor", candor), ("plain", plain)):
        kinds: dict[str, int] = {}
        for answer in load.failed():
            kind = answer.error or f"HTTP {answer.status}"
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"failures, {label}: " + (", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"))
    print(f"follower errors: Candor {len(with_candor.errors)}, plain {len(with_plain.errors)}")
    rows = []
    for label, load in (("with Candor (drain handshake)", candor), ("without Candor (readiness probe)", plain)):
        failed = load.failed()
        late = answered_after_sigterm(load, events)
        rows.append((label, len(load.answers), len(failed), len(late)))
    print(f"{args.restarts} rollout restarts of 2 x 3 replicas in {took:.0f} s, {args.rate:.0f} requests/s to each")
    print(f"{'setup':<34} {'requests':>9} {'failed':>7} {'sent after SIGTERM':>19}")
    for label, total, failed_count, late_count in rows:
        print(f"{label:<34} {total:>9} {failed_count:>7} {late_count:>19}")
    missed = rows[0][2] > 0
    print("target (0 failed with Candor): " + ("MISSED" if missed else "met"))
    remove_scratch(workdir)  # only now: the events counted above are files in it
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
