"""Departures benchmark: every way a pod leaves, on two nodes, under both controllers' behaviours, with Candor,
without it, and with the usual `preStop: sleep` workaround, side by side in one run.

    sudo .venv/bin/python -m bench.departures [--rate 50] [--controllers haproxytech,haproxy-ingress]
                                              [--ways rollout,scale,delete,node-drain,single-rollout]

A control plane and two nodes (harness/cluster/node.py), the chart installed, and per controller one
namespace holding 3-replica Deployments of the demo app (harness/processes/drain_rig.py CELLS): `candor` (the
sidecar, the rendered backend, the app's readiness probe), `candor-bare` (the same without the app's own
probe), `plain` (no Candor), `plain-sleep` (no Candor, `preStop: sleep: 15` and a grace period to match),
each with a PodDisruptionBudget of one unavailable pod. One HAProxy follows every Service's EndpointSlices as
the controller does (harness/processes/endpoint_follower.py). A steady stream of requests, one new connection
each, goes to every cell while its pods leave, one way after another:

* rollout: `kubectl rollout restart`;  scale: 3 -> 1, then back to 3;  delete: `kubectl delete pod` of one;
* node-drain: `kubectl drain` of the first node (evictions within the budget; the pods move to the other);
* single-rollout: a one-replica Deployment rolled (the defaults: maxSurge 1, maxUnavailable 0);
* recreate: the Deployment's strategy set to `Recreate`, then rolled: every pod leaves before any new one
  starts. No handshake can keep requests from failing then (nothing is left to take them); it is measured
  to say so, and exempt from the 0-failed target.

Per cell and way: requests sent, failed (by kind), answered by a pod after its app's SIGTERM, the time from
a pod's deletion (as first seen, polling every 0.2 s) to its app's SIGTERM (median and slowest), and the
seconds until the last leaving pod was gone. With Candor those seconds include each new pod's
`minReadySeconds` (the operator's ready window: the endpoint's propagation to every HAProxy); a leaving
sidecar holds for a final scrape only where something has scraped it (here nothing does, so none holds).
Targets: 0 failed in every Candor cell; every Candor pod's SIGTERM at most 2 x agent-inter +
1 s after its deletion; every way done sooner with Candor than with the sleep. Writes
bench/results/departures.json; exits non-zero when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import Results
from bench.scratch import remove_scratch, scratch_dir
from candor_sidecar.durations import parse_duration
from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import install_chart
from harness.cluster.node import Node, another_node
from harness.processes.drain_rig import CELLS, POLICY, Load, answered_after_sigterm, names_of, objects, rig, sigterms
from harness.processes.endpoint_follower import CONTROLLERS
from harness.processes.ports import free_port

TITLE = "Departures: every way a pod leaves, on two nodes, under both controllers"
ABOUT = """\
A control plane and two real nodes with the chart installed, and per ingress controller's behaviour
(haproxytech, haproxy-ingress) 3-replica Deployments of the demo app side by side: `candor` (the sidecar, the
rendered backend, the app's readiness probe), `candor-bare` (the same without the app's own probe), `plain`
(no Candor) and `plain-sleep` (no Candor, the usual `preStop: sleep 15`). A steady stream of requests goes to
every Deployment while its pods leave in each way: rollout restart, scale 3 -> 1 -> 3, `kubectl delete pod`,
`kubectl drain` onto the other node, a one-replica rollout and `Recreate` (which no drain can make lossless:
measured, not held to 0 failed). With Candor the seconds include each new pod's `minReadySeconds` (nothing
scrapes the sidecars here, so none holds for a final scrape). Needs root."""

REPLICAS = 3
COMPARED = ("candor", "candor-bare", "plain", "plain-sleep")
WAYS = ("rollout", "scale", "delete", "node-drain", "single-rollout", "recreate")
UNPROTECTED = {"recreate"}  # ways no drain can make lossless: measured, not held to 0 failed
SIGTERM_TARGET = 2 * parse_duration(POLICY["agentCheck"]["interval"], "agentCheck.interval") + 1.0


@dataclass
class PodWatch:
    """When each pod of a namespace was first seen deleted and first seen gone (polled every 0.2 s)."""

    cluster: K8sCluster
    namespace: str
    deleted: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    cell_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            listed = self.cluster.api("GET", f"/api/v1/namespaces/{self.namespace}/pods")
            if listed.status == 200:
                present = set()
                for pod in listed.body["items"]:
                    name = pod["metadata"]["name"]
                    present.add(name)
                    self.cell_of[name] = pod["metadata"]["labels"].get("app", "")
                    if pod["metadata"].get("deletionTimestamp"):
                        self.deleted.setdefault(name, now)
                for name in set(self.cell_of) - present:
                    self.gone.setdefault(name, now)
            self._stop.wait(0.2)

    def all_gone(self, pods: list[str]) -> bool:
        return all(pod in self.gone for pod in pods)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Row:
    controller: str
    way: str
    cell: str
    load: Load
    to_sigterm: list[float]
    seconds: float


def _ready_replicas(cluster: K8sCluster, namespace: str, cells: list[str], replicas: int) -> None:
    def settled() -> bool:
        for name in cells:
            status = cluster.api("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}").body
            want = status.get("spec", {}).get("replicas")
            state = status.get("status", {})
            if want != replicas or any(state.get(key) != replicas for key in ("replicas", "readyReplicas",
                                                                              "updatedReplicas")):
                return False
        pods = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods").ok()["items"]
        return len(pods) == replicas * len(cells)  # no leaving pod is still terminating

    cluster.wait_until(settled, 300, f"{replicas} ready replicas of each cell and no pod terminating")


def _scale(cluster: K8sCluster, namespace: str, cells: list[str], replicas: int) -> None:
    cluster.kubectl("scale", "-n", namespace, f"--replicas={replicas}", *[f"deployment/{c}" for c in cells])
    _ready_replicas(cluster, namespace, cells, replicas)


def _way(name: str, cluster: K8sCluster, namespace: str, cells: list[str], first: Node) -> Callable[[], None]:
    deployments = [f"deployment/{cell}" for cell in cells]

    def rollout() -> None:
        cluster.kubectl("rollout", "restart", "-n", namespace, *deployments)
        _ready_replicas(cluster, namespace, cells, REPLICAS)

    def scale() -> None:
        _scale(cluster, namespace, cells, 1)
        _scale(cluster, namespace, cells, REPLICAS)

    def delete() -> None:
        pods = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods").ok()["items"]
        one = {pod["metadata"]["labels"]["app"]: pod["metadata"]["name"] for pod in pods}
        cluster.kubectl("delete", "pod", "-n", namespace, "--wait=false", *one.values())
        _ready_replicas(cluster, namespace, cells, REPLICAS)

    def node_drain() -> None:
        # --delete-emptydir-data: an injected pod has the sidecar's state volume (an emptyDir; its journals are
        # folded into the final scrape at termination), which kubectl drain refuses to evict without it.
        cluster.kubectl("drain", first.name, f"--pod-selector=app in ({','.join(cells)})", "--timeout=600s",
                        "--delete-emptydir-data", timeout=620)
        _ready_replicas(cluster, namespace, cells, REPLICAS)
        cluster.kubectl("uncordon", first.name)

    def single_rollout() -> None:
        cluster.kubectl("rollout", "restart", "-n", namespace, *deployments)
        _ready_replicas(cluster, namespace, cells, 1)

    def recreate() -> None:
        def strategy(kind: dict[str, Any]) -> None:
            for deployment in deployments:  # the strategy is not in the pod template: patching it rolls nothing
                cluster.kubectl("patch", "-n", namespace, deployment, "--type=merge",
                                "-p", json.dumps({"spec": {"strategy": kind}}))

        strategy({"type": "Recreate", "rollingUpdate": None})
        cluster.kubectl("rollout", "restart", "-n", namespace, *deployments)
        _ready_replicas(cluster, namespace, cells, REPLICAS)
        strategy({"type": "RollingUpdate"})

    ways: dict[str, Callable[[], None]] = {"rollout": rollout, "scale": scale, "delete": delete,
                                           "node-drain": node_drain, "single-rollout": single_rollout,
                                           "recreate": recreate}
    return ways[name]


def run_controller(cluster: K8sCluster, controller: str, ways: list[str], events: Path, rate: float,
                   first: Node) -> list[Row]:
    namespace = f"departures-{controller}"
    cluster.create_namespace(namespace)
    made = objects(namespace, events, REPLICAS, COMPARED, controller)
    budgets = [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": cell, "namespace": namespace},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": cell}}}} for cell in COMPARED]
    cluster.apply(*made, *budgets)
    _ready_replicas(cluster, namespace, list(COMPARED), REPLICAS)
    fronts = {cell: free_port() for cell in COMPARED}
    rows: list[Row] = []
    with rig(cluster, namespace, fronts, controller) as (_haproxy, followers), \
            PodWatch(cluster, namespace) as watch:
        cluster.wait_until(lambda: all(len(f.events) >= REPLICAS for f in followers.values()), 120,
                           "every backend filled")
        for way in ways:
            if way == "single-rollout":
                _scale(cluster, namespace, list(COMPARED), 1)
            began = time.monotonic()
            with contextlib.ExitStack() as running:
                loads = {cell: running.enter_context(Load(port, rate)) for cell, port in fronts.items()}
                _way(way, cluster, namespace, list(COMPARED), first)()
            terms = sigterms(events)
            # The way ended when the API server said so; the watch may see the last pods gone a poll later.
            leaving = [pod for pod, when in watch.deleted.items() if when >= began]
            cluster.wait_until(functools.partial(watch.all_gone, leaving), 10, "every leaving pod seen gone")
            for cell in COMPARED:
                left = [pod for pod, when in watch.deleted.items() if watch.cell_of.get(pod) == cell and when >= began]
                to_sigterm = [terms[pod] - watch.deleted[pod] for pod in left if pod in terms]
                gone = [watch.gone[pod] for pod in left if pod in watch.gone]
                rows.append(Row(controller, way, cell, loads[cell], to_sigterm, max(gone, default=began) - began))
            if way == "single-rollout":
                _scale(cluster, namespace, list(COMPARED), REPLICAS)
    cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")
    return rows


def report(rows: list[Row], events: Path, results: Results) -> bool:
    """Prints the table and records it in `results`; True when a target was missed."""
    table = results.table("controller", "way", "cell", "sent", "failed", "after SIGTERM", "to SIGTERM med/max s",
                          "seconds", "failures")
    print(f"{'controller':<16} {'way':<15} {'cell':<12} {'sent':>6} {'failed':>6} {'after SIGTERM':>13} "
          f"{'to SIGTERM med/max':>19} {'seconds':>8}  failures")
    missed: list[str] = []
    done: dict[tuple[str, str, str], float] = {}
    for row in rows:
        kinds: dict[str, int] = {}
        for answer in row.load.failed():
            kind = answer.error or f"HTTP {answer.status}"
            kinds[kind] = kinds.get(kind, 0) + 1
        failed = len(row.load.failed())
        late = len(answered_after_sigterm(row.load, events))
        terms = (f"{statistics.median(row.to_sigterm):.1f}/{max(row.to_sigterm):.1f}" if row.to_sigterm else "-")
        failures = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"
        print(f"{row.controller:<16} {row.way:<15} {row.cell:<12} {len(row.load.answers):>6} {failed:>6} "
              f"{late:>13} {terms:>19} {row.seconds:>8.1f}  {failures}")
        table.add(row.controller, row.way, row.cell, len(row.load.answers), failed, late, terms,
                  f"{row.seconds:.1f}", failures)
        done[(row.controller, row.way, row.cell)] = row.seconds
        if CELLS[row.cell].inject:
            if failed and row.way not in UNPROTECTED:
                missed.append(f"{row.controller} {row.way} {row.cell}: {failed} failed")
            if row.to_sigterm and max(row.to_sigterm) > SIGTERM_TARGET:
                missed.append(f"{row.controller} {row.way} {row.cell}: SIGTERM {max(row.to_sigterm):.1f} s after "
                              f"the deletion (target {SIGTERM_TARGET:g} s)")
    compared = later = 0
    for (controller, way, cell), seconds in done.items():
        slept = done.get((controller, way, "plain-sleep"))
        compared += CELLS[cell].inject and slept is not None
        if CELLS[cell].inject and slept is not None and seconds >= slept:
            later += 1
            missed.append(f"{controller} {way} {cell}: {seconds:.1f} s, not sooner than the sleep's {slept:.1f} s")
    print("targets (0 failed with Candor; SIGTERM within 2 x agent-inter + 1 s; sooner than the sleep): "
          + ("MISSED\n  " + "\n  ".join(missed) if missed else "met"))
    candor = [row for row in rows if CELLS[row.cell].inject]
    failed_with_candor = sum(len(row.load.failed()) for row in candor if row.way not in UNPROTECTED)
    slowest = max((max(row.to_sigterm) for row in candor if row.to_sigterm), default=0.0)
    results.target("failed requests with Candor, every way but Recreate", "0", str(failed_with_candor),
                   failed_with_candor == 0)
    results.target("slowest app SIGTERM after its pod's deletion, with Candor", f"<= {SIGTERM_TARGET:g} s",
                   f"{slowest:.1f} s", slowest <= SIGTERM_TARGET)
    results.target("ways done sooner with Candor than with the sleep", "all",
                   f"{compared - later} of {compared}", later == 0)
    for line in missed:
        results.note(f"missed: {line}")
    return bool(missed)


def main() -> int:
    if os.geteuid() != 0:
        print(f"{Path(__file__).name}: the test nodes need root (containerd, kubelet, interfaces); run it as root")
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second to each cell")
    parser.add_argument("--controllers", default=",".join(CONTROLLERS))
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    controllers = names_of(args.controllers, CONTROLLERS, "--controllers")
    ways = names_of(args.ways, WAYS, "--ways")
    workdir = scratch_dir("candor-bench-departures-")
    events = workdir / "events"
    events.mkdir()
    events.chmod(0o777)  # the apps run as uid 10001
    cluster = K8sCluster(workdir, ensure_binaries()).start()
    nodes: list[Node] = []
    rows: list[Row] = []
    try:
        nodes.append(Node(cluster=cluster).start())
        nodes.append(another_node(cluster, 2).start())
        install_chart(cluster, "candor-system")
        for controller in controllers:
            rows += run_controller(cluster, controller, ways, events, args.rate, nodes[0])
    finally:
        for node in reversed(nodes):
            node.stop()
        cluster.stop()
    setup = (f"{len(nodes)} nodes, {REPLICAS} replicas per cell, {args.rate:.0f} requests/s to each cell; "
             f"the sleep cell: preStop sleep {CELLS['plain-sleep'].sleep} s")
    print(setup)
    results = Results("departures")
    results.note(setup)
    missed = report(rows, events, results)
    results.write()
    remove_scratch(workdir)  # only now: the events counted above are files in it
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
