"""Load-weights benchmark on the real node: bench/weights.py's comparison, with pods instead of host processes.

    sudo .venv/bin/python -m bench.weights_node [--seconds 30] [--rate 100]

A control plane and the test node (harness/cluster/node.py), the chart installed. Two HealthPolicies in one
namespace: `plain` (no load weights) and `weighted` (the same with `agentCheck.weight`), each governing
three pods of the app whose requests cost CPU (harness/apps/cpu_app.py, run from a ConfigMap in the
candor-sidecar image): `s1` and `s2` with `resources.limits.cpu` of `--cores`, `s3` starved with `--starved`.
The operator's webhook injects each pod's sidecar from its policy. One real HAProxy on the host reaches the
pods by their IPs (the node's bridge), its backends rendered by `candor render`'s code: `roundrobin` and
`leastconn` on the plain pods, `candor` (load weights, `roundrobin`) and `candor_leastconn` (for
information) on the weighted ones. The load, the table and the targets are bench/weights.py's.
Writes bench/results/weights_node.json; exits 1 when a target is missed, 2 when it cannot run here.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.scratch import remove_scratch, scratch_dir
from bench.weights import BACKENDS, haproxy_config, load_arguments, measure, policy_specs, report
from candor_demo.haproxy_process import HAProxyProcess, check_config
from candor_operator.policy import parse_policy
from candor_operator.render import Server
from candor_sidecar.release import VERSION
from harness.cluster.components import ROOT, ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import install_chart
from harness.cluster.node import Node
from harness.processes.ports import free_port

TITLE = "Load weights on the real node: a CPU-starved pod behind HAProxy"
ABOUT = """\
The comparison of "Load weights: a CPU-starved replica behind HAProxy", on a real node (containerd, runc,
kubelet) with the chart installed: three pods of the app whose requests cost CPU, one of them starved by a
lower `resources.limits.cpu`, their sidecars injected by the operator from a HealthPolicy with
`agentCheck.weight` (and, for the baselines, three more such pods governed by the same policy without it);
one real HAProxy on the host with backends rendered by `candor render`'s code pointing at the pod IPs:
`roundrobin`, `leastconn`, and Candor's load weights with each. The same steady load goes through each
backend in turn. Needs root."""

NS = "weights"
APP_PORT = 8080
VARIANTS = ("plain", "weighted")  # the policy without load weights, the same one with them
APP_SOURCE = ROOT / "harness" / "apps" / "cpu_app.py"


def millicores(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def app_source() -> dict[str, Any]:
    """The app as a file in a ConfigMap: it needs only candor_tracer and prometheus_client, both in the image."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cpu-app", "namespace": NS},
            "data": {"cpu_app.py": APP_SOURCE.read_text()}}


def policy(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy",
            "metadata": {"name": variant, "namespace": NS}, "spec": spec}


def app_pod(variant: str, name: str, cores: float, cost_ms: float) -> dict[str, Any]:
    """One replica: a bare pod, since only a pod of its own can have a CPU limit unlike its siblings'."""
    limit = millicores(cores)
    container = {
        "name": "app", "image": f"candor-sidecar:{VERSION}", "imagePullPolicy": "IfNotPresent",
        "command": ["python", "/bench/cpu_app.py"],
        "args": [f"--port={APP_PORT}", "--bind=0.0.0.0", f"--name={name}", "--workers=4", f"--cost-ms={cost_ms:g}"],
        # As bench/weights.py: heartbeats every 0.25 s, so the CPU figures reach the sidecar twice as often.
        "env": [{"name": "CANDOR_HEARTBEAT_INTERVAL", "value": "0.25"}],
        "ports": [{"name": "http", "containerPort": APP_PORT}],
        "readinessProbe": {"httpGet": {"path": "/", "port": APP_PORT}, "periodSeconds": 1},
        # The request is the limit, as for a Guaranteed pod's CPU: its share under contention is its limit.
        "resources": {"requests": {"cpu": limit, "memory": "64Mi"}, "limits": {"cpu": limit, "memory": "128Mi"}},
        "volumeMounts": [{"name": "app", "mountPath": "/bench", "readOnly": True}],
    }
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{variant}-{name}", "namespace": NS, "labels": {"weights": variant},
                     "annotations": {"candor.io/inject": "true"}},
        "spec": {"containers": [container], "volumes": [{"name": "app", "configMap": {"name": "cpu-app"}}],
                 "terminationGracePeriodSeconds": 5},
    }


def _policy_ready(cluster: K8sCluster, name: str) -> bool:
    status = cluster.api("GET", f"/apis/candor.io/v1alpha1/namespaces/{NS}/healthpolicies/{name}").ok()
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("status", {}).get("conditions", []))


def pod_ips(cluster: K8sCluster, count: int) -> dict[str, str]:
    """Pod name -> IP, once `count` pods are Ready, each with the injected sidecar."""
    def ready() -> dict[str, str] | None:
        pods = cluster.api("GET", f"/api/v1/namespaces/{NS}/pods").ok()["items"]
        ips = {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods
               if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}
        return ips if len(ips) == count else None

    ips: dict[str, str] = cluster.wait_until(ready, 240, f"{count} pods Ready in {NS}")
    for pod in cluster.api("GET", f"/api/v1/namespaces/{NS}/pods").ok()["items"]:
        if not any(c["name"] == "candor-sidecar" for c in pod["spec"].get("initContainers", [])):
            raise AssertionError(f"{pod['metadata']['name']}: no sidecar injected")
    return ips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_arguments(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(f"{Path(__file__).name}: the test node needs root (containerd, kubelet, an interface); run it as root")
        return 2
    if shutil.which("haproxy") is None:
        print(f"{Path(__file__).name}: needs haproxy (make system-deps)")
        return 2
    replicas = [("s1", args.cores), ("s2", args.cores), ("s3", args.starved)]
    # Each policy governs the pods labelled with its name; "plain" is the spec without weights, "weighted" with.
    specs = {variant: policy_specs({"matchLabels": {"weights": variant}})[index]
             for index, variant in enumerate(VARIANTS)}
    workdir = scratch_dir("candor-bench-weights-node-")
    cluster = K8sCluster(workdir, ensure_binaries()).start()
    node = Node(cluster=cluster)
    try:
        node.start()
        install_chart(cluster, "candor-system")
        cluster.create_namespace(NS)
        cluster.apply(*(policy(variant, spec) for variant, spec in specs.items()))
        for variant in VARIANTS:  # the webhook injects only pods a Ready policy governs
            cluster.wait_until(functools.partial(_policy_ready, cluster, variant), 60, f"the policy {variant} Ready")
        cluster.apply(app_source(), *(app_pod(variant, name, cores, args.cost_ms)
                                      for variant in VARIANTS for name, cores in replicas))
        ips = pod_ips(cluster, len(VARIANTS) * len(replicas))
        servers = {variant: [Server(name, f"{ips[f'{variant}-{name}']}:{APP_PORT}") for name, _ in replicas]
                   for variant in VARIANTS}
        fronts = {name: free_port() for name in BACKENDS}
        config = haproxy_config(parse_policy(specs["plain"]), parse_policy(specs["weighted"]), servers["plain"],
                                servers["weighted"], fronts)
        checked = check_config(config)
        if checked.returncode != 0:
            print(f"weights_node.py: haproxy -c refused the rendered config:\n{checked.stdout}{checked.stderr}")
            return 1
        with HAProxyProcess(config) as haproxy:
            phases = measure(haproxy, fronts, [name for name, _ in replicas], args)
    finally:
        node.stop()
        cluster.stop()
        remove_scratch(workdir)
    return report("weights_node", "pods", phases, replicas, args)


if __name__ == "__main__":
    sys.exit(main())
