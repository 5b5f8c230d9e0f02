"""Departures benchmark: every way a pod leaves, on two nodes, under both controllers' behaviours, with Candor,
without it, and with the usual `preStop: sleep` workaround, side by side in one run.

    sudo .venv/bin/python -m bench.departures [--rate 50] [--controllers haproxytech,haproxy-ingress]
                                              [--ways rollout,scale,delete,node-drain,...]

A control plane and two nodes (harness/cluster/node.py), the chart installed, and per controller one
namespace holding 3-replica Deployments of the demo app (harness/processes/drain_rig.py CELLS): `candor` (the
sidecar, the rendered backend, the app's readiness probe), `candor-bare` (the same without the app's own
probe), `plain` (no Candor), `plain-sleep` (no Candor, `preStop: sleep: 15` and a grace period to match),
each with a PodDisruptionBudget of one unavailable pod. HAProxy follows every Service's EndpointSlices as
the controller does (harness/processes/endpoint_follower.py). A steady stream of requests (one in
KEPT_ALIVE over a reused kept-alive connection, the others a new connection each) goes to every cell while
its pods leave, one way after another:

* rollout: `kubectl rollout restart`;  scale: 3 -> 1, then back to 3;  delete: `kubectl delete pod` of one;
* node-drain: `kubectl drain` of the first node (evictions within the budget; the pods move to the other);
* single-rollout: a one-replica Deployment rolled (the defaults: maxSurge 1, maxUnavailable 0);
* recreate: the Deployment's strategy set to `Recreate`, then rolled: every pod leaves before any new one
  starts. No handshake can keep requests from failing then (nothing is left to take them); it is measured
  to say so, and exempt from the 0-failed target;
* reload: `delete` with every HAProxy reloaded as the controllers reload it (a new worker loading the
  servers' state from a file) once the drains are under way;
* long-requests: `delete` of the pod holding a 20 s request and a 20 s streamed response of each cell
  (sent through HAProxy until one of each lands there); they must complete;
* rollout-3lb, delete-3lb: the same with three HAProxys, all taking traffic, polling the agents from three
  distinct source addresses (added on the first node's bridge, so they go with it);
* rollout-lag, delete-lag: the same with a controller acting LAG seconds behind the EndpointSlices.

Per cell and way: requests sent, failed (by kind), kept-alive connections closed unanswered (counted apart,
with how many a client retrying on a new connection got answered), answered by a pod after its app's
SIGTERM, how each drain ended (from the operator's `Drained` Events), the time from a pod's deletion (as
first seen, polling every 0.2 s) to its app's SIGTERM (median and slowest), and the seconds until the last
leaving pod was gone. With Candor those seconds include each new pod's `minReadySeconds` (the operator's
ready window: the endpoint's propagation to every HAProxy); a leaving sidecar holds for a final scrape only
where something has scraped it (here nothing does, so none holds).
Targets: 0 failed in every Candor cell; every Candor pod's SIGTERM at most 2 x agent-inter +
1 s after its deletion; every way done sooner with Candor than with the sleep. Writes
bench/results/departures.json; exits non-zero when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.results import Results
from bench.scratch import remove_scratch, scratch_dir
from candor_operator.drain_events import read_event_message
from candor_sidecar.drain.state import DrainTimes
from candor_sidecar.drain.summary import DrainSummary
from candor_sidecar.durations import parse_duration
from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import install_chart
from harness.cluster.node import Node, another_node
from harness.processes.drain_rig import CELLS, POLICY, Load, answered_after_sigterm, names_of, objects, rig, sigterms
from harness.processes.endpoint_follower import CONTROLLERS
from harness.processes.haproxy_reload import ReloadableHAProxy
from harness.processes.long_requests import LongRequests
from harness.processes.pod_departures import REPLICAS, Departure, Front, PodWatch, ready_replicas, scale
from harness.processes.ports import free_port

TITLE = "Departures: every way a pod leaves, on two nodes, under both controllers"
ABOUT = """\
A control plane and two real nodes with the chart installed, and per ingress controller's behaviour
(haproxytech, haproxy-ingress) 3-replica Deployments of the demo app side by side: `candor` (the sidecar, the
rendered backend, the app's readiness probe), `candor-bare` (the same without the app's own probe), `plain`
(no Candor) and `plain-sleep` (no Candor, the usual `preStop: sleep 15`). A steady stream of requests goes to
every Deployment while its pods leave in each way: rollout restart, scale 3 -> 1 -> 3, `kubectl delete pod`,
`kubectl drain` onto the other node, a one-replica rollout, `Recreate` (which no drain can make lossless:
measured, not held to 0 failed), a deletion with HAProxy reloaded mid-drain, a deletion of the pods holding
a 20 s request and a 20 s stream, and rollouts and deletions behind three HAProxys polling from three
addresses and behind a controller 3 s late. With Candor the seconds include each new pod's
`minReadySeconds` (nothing scrapes the sidecars here, so none holds for a final scrape). `kept-alive closed`
counts requests whose reused client connection was closed unanswered (an HAProxy reload closes idle ones),
and how many a client retrying on a new connection got answered; they are not in `failed` unless that retry
failed too. Needs root."""

COMPARED = ("candor", "candor-bare", "plain", "plain-sleep")
KEPT_ALIVE = 4  # every 4th request reuses a kept-alive client connection
LAG = 3.0  # seconds the lagging controller acts behind the EndpointSlices
# Three load balancers' source addresses: outside every node's pod subnet, added on the first node's bridge
# (the pods' replies route back through it), and gone with the bridge when the node stops or is restored.
SOURCES = ("10.244.76.1", "10.244.76.2", "10.244.76.3")


@dataclass(frozen=True)
class Setup:
    """The load balancers in front of the cells while a way runs."""

    label: str
    haproxys: int = 1
    lag: float = 0.0


SETUPS = {"one": Setup("1 HAProxy"), "three": Setup("3 HAProxys", haproxys=3),
          "lagging": Setup(f"1 HAProxy, {LAG:g} s late", lag=LAG)}
# way -> (what happens to the pods, the setup it runs behind)
WAYS: dict[str, tuple[str, str]] = {
    "rollout": ("rollout", "one"), "scale": ("scale", "one"), "delete": ("delete", "one"),
    "node-drain": ("node-drain", "one"), "single-rollout": ("single-rollout", "one"),
    "recreate": ("recreate", "one"), "reload": ("reload", "one"), "long-requests": ("long-requests", "one"),
    "rollout-3lb": ("rollout", "three"), "delete-3lb": ("delete", "three"),
    "rollout-lag": ("rollout", "lagging"), "delete-lag": ("delete", "lagging"),
}
UNPROTECTED = {"recreate"}  # ways no drain can make lossless: measured, not held to 0 failed
AGENT_INTER = parse_duration(POLICY["agentCheck"]["interval"], "agentCheck.interval")
SIGTERM_TARGET = 2 * AGENT_INTER + 1.0
LOOKBACK = DrainTimes(poll_interval=AGENT_INTER).lookback


@dataclass
class Row:
    controller: str
    way: str
    setup: str
    cell: str
    load: Load
    to_sigterm: list[float]
    seconds: float
    drains: list[DrainSummary]  # the cell's drains, from the operator's Drained Events
    unreported: int  # leaving Candor pods no Drained Event was seen for
    long: LongRequests | None = None


def _drain_summaries(cluster: K8sCluster, namespace: str, pods: list[str]) -> dict[str, DrainSummary]:
    """pod -> its drain as the operator's `Drained` Event tells it (absent when none came)."""
    listed = cluster.api("GET", f"/api/v1/namespaces/{namespace}/events",
                         params={"fieldSelector": "reason=Drained"}).ok()["items"]
    summaries = {}
    for event in listed:
        pod = event["involvedObject"]["name"]
        summary = read_event_message(event.get("message", ""))
        if pod in pods and summary is not None:
            summaries[pod] = summary
    return summaries


def _drains_text(drains: list[DrainSummary], unreported: int) -> str:
    """How a cell's drains ended, HAProxy by HAProxy, summed over its leaving pods."""
    if not drains and not unreported:
        return "-"
    text = (f"{len(drains)}: heard {sum(d.heard for d in drains)}, removed {sum(d.removed for d in drains)}, "
            f"silent {sum(d.silent for d in drains)}, timed out {sum(d.timed_out for d in drains)}")
    return text + (f"; {unreported} without an Event" if unreported else "")


@contextlib.contextmanager
def _fronts(cluster: K8sCluster, namespace: str, controller: str, setup: Setup,
            first: Node) -> Iterator[list[Front]]:
    with contextlib.ExitStack() as stack:
        fronts = []
        sources: tuple[str | None, ...] = SOURCES[:setup.haproxys] if setup.haproxys > 1 else (None,)
        for source in sources:
            if source is not None:
                subprocess.run(["ip", "addr", "replace", f"{source}/32", "dev", first.bridge], check=True)
                stack.callback(subprocess.run, ["ip", "addr", "del", f"{source}/32", "dev", first.bridge],
                               check=False, capture_output=True)
            ports = {cell: free_port() for cell in COMPARED}
            haproxy, followers = stack.enter_context(
                rig(cluster, namespace, ports, controller, setup.lag, reloadable=True, source=source))
            assert isinstance(haproxy, ReloadableHAProxy)
            cluster.wait_until(lambda f=followers: all(len(x.events) >= REPLICAS for x in f.values()), 120,
                               "every backend filled")
            fronts.append(Front(ports, haproxy))
        yield fronts


def run_controller(cluster: K8sCluster, controller: str, ways: list[str], events: Path, rate: float,
                   first: Node) -> list[Row]:
    namespace = f"departures-{controller}"
    cluster.create_namespace(namespace)
    made = objects(namespace, events, REPLICAS, COMPARED, controller)
    budgets = [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": cell, "namespace": namespace},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": cell}}}} for cell in COMPARED]
    cluster.apply(*made, *budgets)
    ready_replicas(cluster, namespace, list(COMPARED), REPLICAS)
    rows: list[Row] = []
    closed = 0.0  # when the previous setup's HAProxys stopped
    with PodWatch(cluster, namespace) as watch:
        for setup_name, group in itertools.groupby(ways, key=lambda way: WAYS[way][1]):
            setup = SETUPS[setup_name]
            with _fronts(cluster, namespace, controller, setup, first) as fronts:
                # A sidecar counts an address that polled within its lookback as one of a drain's load
                # balancers: the HAProxys just stopped would show as `removed` in the next drains.
                time.sleep(max(0.0, closed + LOOKBACK - time.monotonic()))
                for way in group:
                    rows += _run_way(cluster, namespace, controller, way, setup, fronts, watch, first, events,
                                     rate)
            closed = time.monotonic()
    cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")
    return rows


def _run_way(cluster: K8sCluster, namespace: str, controller: str, way: str, setup: Setup, fronts: list[Front],
             watch: PodWatch, first: Node, events: Path, rate: float) -> list[Row]:
    departure = Departure(cluster, namespace, list(COMPARED), first, fronts, watch)
    single = WAYS[way][0] == "single-rollout"
    if single:
        scale(cluster, namespace, list(COMPARED), 1)
    began = time.monotonic()
    with contextlib.ExitStack() as running:
        loads = {cell: running.enter_context(Load(tuple(front.ports[cell] for front in fronts), rate,
                                                  kept_alive=KEPT_ALIVE)) for cell in COMPARED}
        departure.run(WAYS[way][0])
    terms = sigterms(events)
    # The way ended when the API server said so; the watch may see the last pods gone a poll later.
    leaving = [pod for pod, when in watch.deleted.items() if when >= began]
    cluster.wait_until(functools.partial(watch.all_gone, leaving), 60, "every leaving pod seen gone")
    # The operator posts each Drained Event once it sees the pod's sidecar terminated: a moment after.
    expected = [pod for pod in leaving if CELLS[watch.cell_of.get(pod, "plain")].inject]
    with contextlib.suppress(TimeoutError):  # a missing Event is shown in the table, not fatal
        cluster.wait_until(lambda: len(_drain_summaries(cluster, namespace, expected)) >= len(expected), 15,
                           "a Drained Event for every leaving Candor pod")
    summaries = _drain_summaries(cluster, namespace, expected)
    rows = []
    for cell in COMPARED:
        left = [pod for pod, when in watch.deleted.items() if watch.cell_of.get(pod) == cell and when >= began]
        to_sigterm = [terms[pod] - watch.deleted[pod] for pod in left if pod in terms]
        gone = [watch.gone[pod] for pod in left if pod in watch.gone]
        drains = [summaries[pod] for pod in left if pod in summaries]
        unreported = len(left) - len(drains) if CELLS[cell].inject else 0
        rows.append(Row(controller, way, setup.label, cell, loads[cell], to_sigterm,
                        max(gone, default=began) - began, drains, unreported, departure.long.get(cell)))
    if single:
        scale(cluster, namespace, list(COMPARED), REPLICAS)
    return rows


def _failures(row: Row) -> tuple[int, str]:
    kinds: dict[str, int] = {}
    for answer in row.load.failed():
        kind = answer.error or f"HTTP {answer.status}"
        kinds[kind] = kinds.get(kind, 0) + 1
    failed = len(row.load.failed())
    if row.long is not None:
        for kind in row.long.failures():
            kinds[kind] = kinds.get(kind, 0) + 1
            failed += 1
    return failed, ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"


def _med_max(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}/{max(values):.1f}" if values else "-"


def report(rows: list[Row], events: Path, results: Results) -> bool:
    """Prints the table and records it in `results`; True when a target was missed."""
    columns = ("controller", "way", "HAProxys", "cell", "sent", "failed", "kept-alive closed (retry ok)",
               "after SIGTERM", "drains ended", "drain med/max s", "to SIGTERM med/max s", "seconds",
               "long requests ok", "failures")
    table = results.table(*columns)
    print(" | ".join(columns))
    missed: list[str] = []
    done: dict[tuple[str, str, str], float] = {}
    for row in rows:
        failed, failures = _failures(row)
        closed = row.load.closed_idle()
        closed_text = f"{len(closed)} ({sum(a.status == 200 for a in closed)})"
        late = len(answered_after_sigterm(row.load, events))
        terms = _med_max(row.to_sigterm)
        drains = _drains_text(row.drains, row.unreported)
        drain_seconds = _med_max([drain.seconds for drain in row.drains])
        long = f"{row.long.completed()}/{len(row.long.requests)}" if row.long is not None else "-"
        cells = (row.controller, row.way, row.setup, row.cell, len(row.load.answers), failed, closed_text, late,
                 drains, drain_seconds, terms, f"{row.seconds:.1f}", long, failures)
        print(" | ".join(str(cell) for cell in cells))
        table.add(*cells)
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
    failed_with_candor = sum(_failures(row)[0] for row in candor if row.way not in UNPROTECTED)
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
    setup = (f"{len(nodes)} nodes, {REPLICAS} replicas per cell, {args.rate:.0f} requests/s to each cell "
             f"(1 in {KEPT_ALIVE} on a kept-alive connection); the sleep cell: preStop sleep "
             f"{CELLS['plain-sleep'].sleep} s; agent-inter {POLICY['agentCheck']['interval']}")
    print(setup)
    results = Results("departures")
    results.note(setup)
    missed = report(rows, events, results)
    results.write()
    remove_scratch(workdir)  # only now: the events counted above are files in it
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
