"""Drain benchmark: requests failed while pods leave, with Candor and without it, under each controller.

    sudo .venv/bin/python -m bench.drain [--restarts 5] [--rate 100] [--controllers haproxytech,haproxy-ingress]
                                           [--cells candor,candor-bare,plain] [--lag 0]

On the test node (harness/cluster/node.py, needs root): 3-replica Deployments of the demo app side by side
(harness/processes/drain_rig.py CELLS), equal but for what their name says: `candor` (the sidecar injected by
the chart's webhook, HAProxy's backend from `candor render`, the app's own readiness probe), `candor-bare`
(the same without a readiness probe of its own), `plain` (no Candor, the readiness probe, HAProxy's
defaults), `plain-bare` (neither). HAProxy's servers follow each Service's EndpointSlices as the chosen
controller does (harness/processes/endpoint_follower.py, from haproxytech's and haproxy-ingress's sources:
haproxytech re-addresses a leaving pod's slot at once, haproxy-ingress keeps it at weight 0), `--lag`
seconds behind them. A steady stream of requests goes to each cell while all are restarted with
`kubectl rollout restart` again and again, once per controller. Counted: failed requests (by kind), and
requests HAProxy sent to a pod after its app got SIGTERM. Target: 0 failed in every Candor cell; the
others are printed beside it. Writes bench/results/drain.json; exits non-zero when the target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from bench.results import Results
from bench.scratch import remove_scratch, scratch_dir
from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import install_chart
from harness.cluster.node import Node
from harness.processes.drain_rig import CELLS, Load, answered_after_sigterm, names_of, objects, rig
from harness.processes.endpoint_follower import CONTROLLERS
from harness.processes.ports import free_port

TITLE = "Drain: requests failed while pods leave, with Candor and without"
ABOUT = """\
On a real node with the chart installed: 3-replica Deployments of the demo app side by side, `candor` (the
sidecar injected by the chart's webhook, HAProxy's backend from `candor render`, the app's own readiness
probe), `candor-bare` (the same without a readiness probe of its own) and `plain` (no Candor, the readiness
probe, HAProxy's defaults). HAProxy's servers follow each Service's EndpointSlices as the chosen ingress
controller does (haproxytech re-addresses a leaving pod's slot at once, haproxy-ingress keeps it at weight
0). A steady stream of requests goes to each Deployment while all are restarted with `kubectl rollout
restart` again and again, once per controller. Counted: failed requests (by kind), and requests HAProxy sent
to a pod after its app got SIGTERM. Needs root."""

REPLICAS = 3


def run_controller(cluster: K8sCluster, controller: str, cells: list[str], events: Path, restarts: int,
                   rate: float, lag: float) -> list[tuple[str, str, Load, float]]:
    """One controller's rollouts: (controller, cell, its load, seconds) per cell."""
    namespace = f"drain-{controller}"
    cluster.create_namespace(namespace)
    cluster.apply(*objects(namespace, events, REPLICAS, cells, controller))
    deployments = [f"deployment/{name}" for name in cells]
    for deployment in deployments:
        cluster.kubectl("rollout", "status", "-n", namespace, deployment, "--timeout=300s", timeout=330)
    fronts = {name: free_port() for name in cells}
    with rig(cluster, namespace, fronts, controller, lag) as (_haproxy, followers):
        cluster.wait_until(lambda: all(len(f.events) >= REPLICAS for f in followers.values()), 120,
                           "every backend filled")
        began = time.monotonic()
        with contextlib.ExitStack() as running:
            loads = {name: running.enter_context(Load((port,), rate)) for name, port in fronts.items()}
            for _ in range(restarts):
                cluster.kubectl("rollout", "restart", "-n", namespace, *deployments)
                for deployment in deployments:
                    cluster.kubectl("rollout", "status", "-n", namespace, deployment, "--timeout=300s", timeout=330)
            # The last pods to leave are still terminating: keep the load on until they are gone.
            cluster.wait_until(
                lambda: len(cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods").ok()["items"])
                == REPLICAS * len(cells), 180, "the replaced pods gone")
        took = time.monotonic() - began
        errors = {name: len(f.errors) for name, f in followers.items() if f.errors}
    if errors:
        print(f"{controller}: follower errors {errors}")
    cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")
    return [(controller, name, loads[name], took) for name in cells]


def main() -> int:
    if os.geteuid() != 0:
        print(f"{Path(__file__).name}: the test node needs root (containerd, kubelet, an interface); run it as root")
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=5, help="rollout restarts per controller")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second to each cell")
    parser.add_argument("--controllers", default=",".join(CONTROLLERS))
    parser.add_argument("--cells", default="candor,candor-bare,plain")
    parser.add_argument("--lag", type=float, default=0.0, help="seconds the controller acts behind the slices")
    args = parser.parse_args()
    controllers = names_of(args.controllers, CONTROLLERS, "--controllers")
    cells = names_of(args.cells, tuple(CELLS), "--cells")
    workdir = scratch_dir("candor-bench-drain-")
    events = workdir / "events"
    events.mkdir()
    events.chmod(0o777)  # the apps run as uid 10001
    cluster = K8sCluster(workdir, ensure_binaries()).start()
    node = Node(cluster=cluster)
    results: list[tuple[str, str, Load, float]] = []
    try:
        node.start()
        install_chart(cluster, "candor-system")
        for controller in controllers:
            results += run_controller(cluster, controller, cells, events, args.restarts, args.rate, args.lag)
    finally:
        node.stop()
        cluster.stop()

    setup = (f"{args.restarts} rollout restarts of {len(cells)} x {REPLICAS} replicas per controller, "
             f"{args.rate:.0f} requests/s to each, controller lag {args.lag:g} s")
    print(setup)
    recorded = Results("drain")
    recorded.note(setup)
    table = recorded.table("controller", "cell", "requests", "failed", "after SIGTERM", "seconds", "failures")
    failed_with_candor = 0
    print(f"{'controller':<16} {'cell':<12} {'requests':>9} {'failed':>7} {'after SIGTERM':>14} {'seconds':>8}"
          "  failures")
    missed = False
    for controller, cell, load, took in results:
        kinds: dict[str, int] = {}
        for answer in load.failed():
            kind = answer.error or f"HTTP {answer.status}"
            kinds[kind] = kinds.get(kind, 0) + 1
        late = answered_after_sigterm(load, events)
        failed = len(load.failed())
        failures = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"
        print(f"{controller:<16} {cell:<12} {len(load.answers):>9} {failed:>7} {len(late):>14} {took:>8.0f}  "
              + failures)
        table.add(controller, cell, len(load.answers), failed, len(late), f"{took:.0f}", failures)
        missed = missed or (CELLS[cell].inject and failed > 0)
        failed_with_candor += failed if CELLS[cell].inject else 0
    print("target (0 failed in every Candor cell): " + ("MISSED" if missed else "met"))
    recorded.target("failed requests in every Candor cell", "0", str(failed_with_candor), not missed)
    recorded.write()
    remove_scratch(workdir)  # only now: the events counted above are files in it
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
