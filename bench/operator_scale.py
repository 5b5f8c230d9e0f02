"""Operator benchmark at cluster scale on a real control plane (kube-apiserver + controller-manager + etcd).

10,000 Services, 5,000 Deployments and 200 HealthPolicies governing 1,000 pods, spread over 10 namespaces;
the operator serves the whole cluster, as the chart installs it. Targets: operator RSS < 256 MiB and idle
CPU < 5 % of a core once converged; apply -> Service annotated p95 < 1 s; pod admission p99 < 100 ms under
50 pod creations per second, with no governed pod left without the sidecar. Prints a table, writes
bench/results/operator_scale.json; exits 1 on a missed target.

    .venv/bin/python -m bench.operator_scale [--services 10000 --deployments 5000 --policies 200 --pods 1000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.operator import annotated_by, measure_latency, rss_mb
from bench.results import Results
from bench.scratch import remove_scratch, scratch_dir
from candor_operator.api_names import INJECT_ANNOTATION, STATUS_ANNOTATION
from candor_operator.injection import INJECTED, SIDECAR_NAME
from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess

TITLE = "Operator at cluster scale: 10,000 Services, 5,000 Deployments, 1,000 governed pods"
ABOUT = """\
The real `candor operator`, serving the whole cluster as the chart installs it, against a real control plane
(kube-apiserver, controller-manager and etcd on 127.0.0.1) holding 10,000 Services, 5,000 Deployments and 200
HealthPolicies governing 1,000 pods, over 10 namespaces: what every Service and Deployment costs it, since it
follows them all (kopf watches the HealthPolicies only; Services and Deployments go through the operator's own
paged list-and-watch caches, `candor_operator/informer.py`, because kopf's indices made a start at this scale
take minutes and pass 250 MiB). The Deployments have `replicas: 0` (the controller-manager gives each its ReplicaSet and
status, as in a cluster, but no pods); 200 of them ask for injection and are governed by a policy. The 1,000
governed pods are created directly through the API at 50 a second, so each goes through the injection webhook,
with a fake `nodeName` (a Node object without a kubelet, the pods tolerate it being unreachable) because no
scheduler or kubelet runs; they stay Pending, which changes nothing the operator does. Measured: the operator's
RSS and CPU while idle after converging (over one resync period, so one round of its 200 policy resyncs is
included); the time a restarted operator takes to converge the 200 policies after their spec changed while it
was down (and the first start, an install); apply -> Service annotated at that scale; and the admission latency
as the operator's own `candor_operator_admission_duration_seconds` histogram has it (request arrival to answer,
quantiles interpolated between its buckets as Prometheus' histogram_quantile does), beside the client's pod
create latency with and without the webhook. The control plane, the operator and this client share the
machine's cores; the client creates objects over kept-alive connections from 16 threads."""

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
GOVERNED_LABEL = "bench.candor.io/governed"  # on the Services the policies target: lists them without the 9,800
APP_IMAGE = "registry.invalid/app:1"  # never pulled: no kubelet runs
ADMISSION_HISTOGRAM = "candor_operator_admission_duration_seconds"
MiB = 1024 * 1024


class KeepAliveApi:
    """The admin's REST calls over one kept-alive HTTPS connection per thread: `K8sCluster.api` opens one per
    call, and 16,000 TLS handshakes would cost the shared cores more than the API server's own work."""

    def __init__(self, cluster: K8sCluster) -> None:
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        user = config["users"][0]["user"]
        self.context = ssl.create_default_context(cafile=config["clusters"][0]["cluster"]["certificate-authority"])
        self.context.load_cert_chain(user["client-certificate"], user["client-key"])
        url = urllib.parse.urlsplit(cluster.server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                                                  timeout=60)
        return conn

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "Content-Type": content_type}
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, OSError):
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return response.status, parsed

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        status, parsed = self.call(method, path, body, content_type)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {json.dumps(parsed)[:1000]}")
        return parsed


# ---- the cluster's contents ------------------------------------------------------------------------------------

def service_body(name: str, app: str, governed: bool) -> dict[str, Any]:
    # Headless: the test control plane's Service CIDR is a /24, far too small for 10,000 cluster IPs.
    metadata: dict[str, Any] = {"name": name}
    if governed:
        metadata["labels"] = {GOVERNED_LABEL: "true"}
    return {"metadata": metadata,
            "spec": {"clusterIP": "None", "selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}


def deployment_body(name: str, app: str | None) -> dict[str, Any]:
    """replicas 0: a ReplicaSet and a status from the controller-manager, no pods. With `app` (a policy's), the
    Deployment asks for injection and its policy governs it; its selector also names the Deployment, so its
    ReplicaSet never adopts the bare governed pods (which carry only `app`) and scales them away."""
    labels = {"app": app or name, "deployment": name}
    annotations = {INJECT_ANNOTATION: "true"} if app else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": APP_IMAGE}]}}}}


def policy_body(name: str, max_conn: int) -> dict[str, Any]:
    return {"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "maxConn": max_conn}}


# The node lifecycle controller marks a Node without a kubelet unreachable and taints it NoExecute; tolerating
# that without a time limit keeps the pods from being evicted during the run (the default toleration is 300 s).
TOLERATIONS = [{"key": key, "operator": "Exists", "effect": "NoExecute"}
               for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]


def pod_body(name: str, app: str, node: str, governed: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"app": app}}
    if governed:
        metadata["labels"][INJECT_ANNOTATION] = "true"
        metadata["annotations"] = {INJECT_ANNOTATION: "true"}
    return {"metadata": metadata,
            "spec": {"nodeName": node, "tolerations": TOLERATIONS,
                     "containers": [{"name": "app", "image": APP_IMAGE, "ports": [{"containerPort": 8080}]}]}}


class Layout:
    """Which object goes in which namespace: the counts spread evenly over the namespaces, policy j governing
    Service p<j>, Deployment dep<j> (the first `policies` Deployments ask for injection) and its share of pods."""

    def __init__(self, namespaces: int, services: int, deployments: int, policies: int, pods: int) -> None:
        self.namespaces = [f"scale-{i:02d}" for i in range(namespaces)]
        self.services, self.deployments, self.policies, self.pods = services, deployments, policies, pods

    def ns(self, index: int) -> str:
        return self.namespaces[index % len(self.namespaces)]

    def policy_names(self) -> list[tuple[str, str]]:
        return [(self.ns(j), f"p{j:04d}") for j in range(self.policies)]

    def service_requests(self) -> list[tuple[str, dict[str, Any]]]:
        requests = [(f"/api/v1/namespaces/{ns}/services", service_body(name, name, True))
                    for ns, name in self.policy_names()]
        for k in range(self.services - self.policies):
            requests.append((f"/api/v1/namespaces/{self.ns(k)}/services", service_body(f"svc{k:05d}", f"svc{k:05d}",
                                                                                         False)))
        return requests

    def deployment_requests(self) -> list[tuple[str, dict[str, Any]]]:
        return [(f"/apis/apps/v1/namespaces/{self.ns(k)}/deployments",
                 deployment_body(f"dep{k:05d}", f"p{k:04d}" if k < self.policies else None))
                for k in range(self.deployments)]

    def policy_requests(self, max_conn: int) -> list[tuple[str, dict[str, Any]]]:
        return [(POLICIES.format(ns=ns), policy_body(name, max_conn)) for ns, name in self.policy_names()]

    def node(self, index: int) -> str:
        return f"scale-node-{index % len(self.namespaces)}"

    def pod_requests(self, governed: bool) -> list[tuple[str, dict[str, Any]]]:
        """Governed pods: pod m belongs to policy m mod policies. The others select nothing Candor governs."""
        requests = []
        for m in range(self.pods):
            j = m % self.policies
            name, app = (f"g{m:05d}", f"p{j:04d}") if governed else (f"u{m:05d}", f"unrelated{m:05d}")
            requests.append((f"/api/v1/namespaces/{self.ns(j)}/pods", pod_body(name, app, self.node(j), governed)))
        return requests


def create_all(api: KeepAliveApi, requests: Sequence[tuple[str, dict[str, Any]]], workers: int) -> float:
    began = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda request: api.ok("POST", *request), requests))
    return time.monotonic() - began


def paced_creates(api: KeepAliveApi, requests: Sequence[tuple[str, dict[str, Any]]], rate: float,
                  workers: int) -> tuple[list[float], float]:
    """POSTs at `rate` a second (each sent on its schedule by one of `workers` threads); each one's latency and
    the rate reached."""
    def timed(request: tuple[str, dict[str, Any]]) -> float:
        began = time.monotonic()
        api.ok("POST", *request)
        return time.monotonic() - began

    began = time.monotonic()
    futures = []
    with ThreadPoolExecutor(workers) as pool:
        for i, request in enumerate(requests):
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the pace of the load itself, not a wait for a condition
            futures.append(pool.submit(timed, request))
        latencies = [future.result() for future in futures]
    return latencies, len(requests) / (time.monotonic() - began)


# ---- what the operator did --------------------------------------------------------------------------------------

def ready_policies(api: KeepAliveApi) -> set[tuple[str, str]]:
    """Policies whose status is of their current generation and Ready."""
    ready = set()
    for policy in api.ok("GET", "/apis/candor.io/v1alpha1/healthpolicies")["items"]:
        metadata, status = policy["metadata"], policy.get("status") or {}
        if status.get("observedGeneration") == metadata.get("generation") and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            ready.add((metadata["namespace"], metadata["name"]))
    return ready


def annotated_services(api: KeepAliveApi, max_conn: int) -> set[tuple[str, str]]:
    """Governed Services annotated for their policy (named like them), as rendered from its current maxConn."""
    services = api.ok("GET", "/api/v1/services?" + urllib.parse.urlencode({"labelSelector": f"{GOVERNED_LABEL}=true"}))
    return {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services["items"]
            if annotated_by(s) == s["metadata"]["name"]
            and (s["metadata"].get("annotations") or {}).get("haproxy.org/pod-maxconn") == str(max_conn)}


def wait_converged(api: KeepAliveApi, wanted: set[tuple[str, str]], max_conn: int, began: float,
                   timeout: float) -> tuple[float, int]:
    """Seconds from `began` until every wanted policy is Ready at its generation and its Service carries the
    annotations of its current spec; and how many were."""
    done = 0
    while time.monotonic() - began < timeout:
        done = len(wanted & ready_policies(api) & annotated_services(api, max_conn))
        if done == len(wanted):
            return time.monotonic() - began, done
        time.sleep(0.5)
    return math.inf, done


def governed_pods(api: KeepAliveApi) -> tuple[int, int]:
    """(governed pods, of which injected): pods that asked for the sidecar, and those carrying it."""
    pods = api.ok("GET", "/api/v1/pods?" + urllib.parse.urlencode({"labelSelector": f"{INJECT_ANNOTATION}=true"}))
    items = pods["items"]
    injected = [p for p in items if (p["metadata"].get("annotations") or {}).get(STATUS_ANNOTATION) == INJECTED
                and any(c.get("name") == SIDECAR_NAME for c in p["spec"].get("initContainers") or [])]
    return len(items), len(injected)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admission_buckets(text: str) -> list[tuple[float, float]]:
    """The admission histogram's cumulative buckets (upper bound, count), +Inf last."""
    for family in text_string_to_metric_families(text):
        if family.name == ADMISSION_HISTOGRAM:
            return sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
    raise RuntimeError(f"{ADMISSION_HISTOGRAM} is not on the operator's /metrics")


def histogram_quantile(q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over the observations between two scrapes: linear within a bucket."""
    buckets = [(le, count - earlier) for (le, count), (_, earlier) in zip(after, before, strict=True)]
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: Prometheus answers that bound
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=5_000)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--pods", type=int, default=1_000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="pod creations per second")
    parser.add_argument("--samples", type=int, default=30, help="apply -> annotated samples")
    parser.add_argument("--resync", type=float, default=60.0, help="the operator's --resync (its default)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the idle operator is watched")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0, help="ceiling for each convergence")
    args = parser.parse_args()
    if args.policies > min(args.services, args.deployments) or args.pods < args.policies:
        parser.error("--policies must not exceed --services, --deployments or --pods")
    layout = Layout(args.namespaces, args.services, args.deployments, args.policies, args.pods)
    wanted = set(layout.policy_names())

    workdir = scratch_dir("candor-bench-operator-scale-")
    cluster = K8sCluster(workdir, ensure_binaries()).start()
    operator: OperatorProcess | None = None
    figures: dict[str, Any] = {}
    try:
        cluster.install_crds()
        api = KeepAliveApi(cluster)
        for ns in layout.namespaces:
            cluster.create_namespace(ns)
        for i in range(len(layout.namespaces)):
            api.ok("POST", "/api/v1/nodes", {"metadata": {"name": layout.node(i)}})
        figures["create_services"] = create_all(api, layout.service_requests(), args.workers)
        figures["create_deployments"] = create_all(api, layout.deployment_requests(), args.workers)
        figures["create_policies"] = create_all(api, layout.policy_requests(30), args.workers)
        print(f"created {args.services} Services in {figures['create_services']:.0f} s, {args.deployments} "
              f"Deployments in {figures['create_deployments']:.0f} s, {args.policies} policies", flush=True)

        # An install: everything is there when the operator first starts.
        (workdir / "operator").mkdir()
        operator = OperatorProcess(cluster, workdir / "operator", webhook=True, metrics=True, resync=args.resync)
        began = time.monotonic()
        operator.start(wait=False)
        figures["install"] = wait_converged(api, wanted, 30, began, args.timeout)
        print(f"install converged in {figures['install'][0]:.1f} s", flush=True)
        operator.wait_ready()
        operator.register_webhook(namespaces=layout.namespaces)

        # Admission: the same pace without the webhook (pods that do not ask) as the baseline, then governed ones.
        figures["baseline"] = paced_creates(api, layout.pod_requests(governed=False), args.rate, 2 * args.workers)
        before = admission_buckets(operator.scrape())
        figures["governed"] = paced_creates(api, layout.pod_requests(governed=True), args.rate, 2 * args.workers)
        after = admission_buckets(operator.scrape())
        figures["admission"] = (histogram_quantile(0.5, before, after), histogram_quantile(0.99, before, after),
                                after[-1][1] - before[-1][1])
        figures["pods"] = governed_pods(api)
        print(f"{figures['pods'][1]} of {figures['pods'][0]} governed pods injected", flush=True)

        figures["latency"] = measure_latency(cluster, layout.namespaces[0], args.samples)

        # Idle: converged, nothing changing; one resync period, so one round of resyncs is in the figure.
        wait_converged(api, wanted, 30, time.monotonic(), args.timeout)
        cpu_before, idle_began = cpu_seconds(operator.pid), time.monotonic()
        rss_peak = rss_mb(operator.pid)
        while time.monotonic() - idle_began < args.idle:
            time.sleep(1)  # sampling RSS through the idle window
            rss_peak = max(rss_peak, rss_mb(operator.pid))
        figures["idle_cpu"] = (cpu_seconds(operator.pid) - cpu_before) / (time.monotonic() - idle_began)
        figures["idle_rss"] = rss_peak

        # A restart with work waiting: every policy's spec changed while the operator was down.
        operator.stop()
        for ns, name in layout.policy_names():
            api.ok("PATCH", f"{POLICIES.format(ns=ns)}/{name}", {"spec": {"maxConn": 40}},
                   "application/merge-patch+json")
        began = time.monotonic()
        operator.start(wait=False)
        figures["restart"] = wait_converged(api, wanted, 40, began, args.timeout)
        figures["restart_rss"] = rss_mb(operator.pid)
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
        remove_scratch(workdir)
    return report(args, figures)


def report(args: argparse.Namespace, figures: dict[str, Any]) -> int:
    latencies: list[float] = figures["latency"]
    apply_p95 = percentile(latencies, 0.95)
    admit_p50, admit_p99, admitted = figures["admission"]
    baseline, baseline_rate = figures["baseline"]
    governed, governed_rate = figures["governed"]
    pods, injected = figures["pods"]
    rss, cpu = figures["idle_rss"], figures["idle_cpu"]
    install, install_done = figures["install"]
    restart, restart_done = figures["restart"]
    scale = (f"{args.services} Services, {args.deployments} Deployments, {args.policies} policies, "
             f"{args.pods} governed pods")
    rows: list[tuple[str, str, str, bool]] = [
        (f"(creating {args.services} Services / {args.deployments} Deployments via the API)",
         f"{figures['create_services']:.0f} s / {figures['create_deployments']:.0f} s", "", True),
        (f"operator first start (an install) -> {args.policies} policies converged",
         f"{install:.1f} s ({install_done} done)", "", True),
        (f"operator restart -> {args.policies} changed policies converged", f"{restart:.1f} s ({restart_done} done)",
         "", True),
        (f"operator RSS, idle over {args.idle:.0f} s (peak)", f"{rss:.0f} MiB", "< 256 MiB", rss < 256),
        (f"operator CPU, idle over {args.idle:.0f} s (resync {args.resync:.0f} s)", f"{cpu * 100:.1f} % of a core",
         "< 5 %", cpu < 0.05),
        ("(operator RSS just after the restart converged)", f"{figures['restart_rss']:.0f} MiB", "", True),
        ("apply -> Service annotated, p50", ms(statistics.median(latencies)), "", True),
        ("apply -> Service annotated, p95", ms(apply_p95), "< 1000 ms", apply_p95 < 1.0),
        (f"admission (operator's histogram, {admitted:.0f} requests), p50", ms(admit_p50), "", True),
        (f"admission (operator's histogram, {admitted:.0f} requests), p99", ms(admit_p99), "< 100 ms",
         admit_p99 < 0.1),
        (f"pod create via the API with the webhook, p50 / p99 ({governed_rate:.0f}/s)",
         f"{ms(statistics.median(governed))} / {ms(percentile(governed, 0.99))}", "", True),
        (f"pod create via the API without it, p50 / p99 ({baseline_rate:.0f}/s)",
         f"{ms(statistics.median(baseline))} / {ms(percentile(baseline, 0.99))}", "", True),
        ("governed pods left without the sidecar", f"{pods - injected} of {pods}", "0",
         pods == args.pods and injected == pods),
    ]
    results = Results("operator_scale")
    met = results.measures(rows, (72, 22, 10), title=scale)
    results.write()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
