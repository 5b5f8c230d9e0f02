"""Node benchmark: Candor in real pods on the test node (needs root; builds what harness/cluster/node.py needs).

    sudo .venv/bin/python -m bench.node [--trials 5]

Measures, in one run:
* pod create -> Ready for a one-replica Deployment, plain and with the sidecar injected by the chart's
  webhook (target: injection adds <= 1 s at the median);
* fault -> HAProxy stops routing: the app's memory crosses 80 % of its real limit. With Candor, HAProxy
  (configured from `candor render`) hears it from the agent (target: the median of `--faults` trials,
  each started at a random phase, <= agent-inter + 1 s). Beside it, the same fault signal (the sidecar's
  /health) as a plain readiness probe with Kubernetes' default settings, HAProxy's servers following the
  Service's EndpointSlices as an ingress controller does (harness/processes/endpoint_follower.py) — the floor
  a probe-only setup gets;
* the sidecar's memory in the pod, from its container's cgroup on the node.
Prints a table, writes bench/results/node.json; exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results import Results
from bench.scratch import remove_scratch, scratch_dir
from candor_demo.haproxy_process import HAProxyProcess
from candor_operator.policy import parse_policy
from candor_operator.render import render_backend
from candor_sidecar.release import VERSION
from harness.cluster.components import ROOT, ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import helm_binary
from harness.cluster.node import Node
from harness.cluster.node_machine import cgroup_hierarchies
from harness.processes.endpoint_follower import EndpointSliceFollower, declare_slots
from harness.processes.ports import free_port
from harness.processes.waiting import wait_until

TITLE = "Node: Candor in real pods"
ABOUT = """\
On a real node (containerd, runc, kubelet) with the chart installed: how long a one-replica Deployment takes
from pod creation to Ready, plain and with the sidecar injected by the chart's webhook; how long after the
app's memory crosses 80 % of its real limit HAProxy stops routing to it, told by Candor's agent-check
(HAProxy configured from `candor render`) and, beside it as the floor, by a plain readiness probe with
Kubernetes' default settings and HAProxy's servers following the Service's EndpointSlices as an ingress
controller does; and the sidecar's memory in the pod, from its container's cgroup. Needs root."""

NS = "bench"
AGENT_INTER = 1.0
POLICY = {
    "selector": {"matchLabels": {"bench": "candor"}},
    "ingress": {"controller": "haproxytech", "services": ["candor"]},
    "httpCheck": {"path": "/health", "interval": "2s", "rise": 2, "fall": 3},
    "agentCheck": {"interval": "1s"},
    "memory": {"maxPercent": 80},
    "slowStart": "5s",
}


def deployment(name: str, inject: bool, readiness_on_sidecar: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app", "image": f"candor-sidecar:{VERSION}",
        "command": ["python", "-m", "candor_demo.resizer_app"],
        "args": ["--name=bench", "--bind=0.0.0.0", "--http-port=8080", "--metrics-port=9100",
                 "--truth-file=/tmp/truth.jsonl", "--workers=2"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if readiness_on_sidecar:
        # Kubernetes' defaults: every 10 s, 3 failures, 1 s timeout.
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": 9898}}
    labels = {"app": name, "bench": "candor" if inject else "plain"}  # the policy governs injected pods
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": {"candor.io/inject": str(inject).lower()}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}]},
        }},
    }


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def wait(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    return wait_until(predicate, timeout, what, poll, error=TimeoutError)


def ready_pod(cluster: K8sCluster, app: str) -> dict[str, Any] | None:
    pods = cluster.api("GET", f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": f"app={app}"}).ok()["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    for pod in live:
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])):
            return dict(pod)
    return None


def start_to_ready(cluster: K8sCluster, inject: bool) -> float:
    name = "start-injected" if inject else "start-plain"
    began = time.monotonic()
    cluster.apply(deployment(name, inject))
    pod = wait(lambda: ready_pod(cluster, name), 180, f"{name} ready")
    took = time.monotonic() - began
    assert inject == any(c["name"] == "candor-sidecar" for c in pod["spec"].get("initContainers", []))
    cluster.kubectl("delete", "deployment", "-n", NS, name, "--wait=true")
    wait(lambda: not cluster.api("GET", f"/api/v1/namespaces/{NS}/pods",
                                 params={"labelSelector": f"app={name}"}).ok()["items"], 120, f"{name} gone", 0.2)
    return took


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def post(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=30) as response:
        return dict(json.loads(response.read()))


def fault_to_out(cluster: K8sCluster, app: str, backend: str, haproxy: HAProxyProcess,
                 follower: EndpointSliceFollower) -> float:
    # The rollout over (the operator may restart a Deployment once), then a pod whose app answers.
    cluster.kubectl("rollout", "status", "-n", NS, f"deployment/{app}", "--timeout=240s", timeout=260)
    pod = wait(lambda: ready_pod(cluster, app), 240, f"{app} ready")
    ip = pod["status"]["podIP"]
    wait(lambda: answers(f"http://{ip}:8080/memory"), 60, f"{app}'s app answering")
    slot = wait(lambda: follower.slot_for(ip), 60, f"{app} in a slot")
    # "no check": the probe setup's servers have no HAProxy checks; UP or not, weight 0 means drained.
    routed = lambda: ((s := haproxy.server_state(backend, slot)).status.split()[0] in ("UP", "no")  # noqa: E731
                      and s.weight > 0)
    wait(routed, 120, f"{app} routed")
    # The routed state was just seen to change at one of HAProxy's polls; a real fault lands at any phase
    # of them (and of the heartbeat and the evaluation), so the fault starts at a random one.
    time.sleep(random.uniform(0.0, AGENT_INTER))
    crossed = post(f"http://{ip}:8080/memory/fill?percent=88&crossing=80")["crossed_at"]
    out = wait(lambda: not routed() or follower.slot_for(ip) != slot, 120, f"{app} out of rotation")
    out_at = time.monotonic()
    del out
    post(f"http://{ip}:8080/memory/free")
    return out_at - crossed


def sidecar_memory(node: Node, cluster: K8sCluster) -> tuple[int, int]:
    pod = wait(lambda: ready_pod(cluster, "candor"), 60, "candor pod")
    status = next(s for s in pod["status"]["initContainerStatuses"] if s["name"] == "candor-sidecar")
    container_id = status["containerID"].split("://", 1)[1]
    assert node.record is not None
    for hierarchy in cgroup_hierarchies():
        for directory in (hierarchy / node.record.cgroup.lstrip("/")).rglob(container_id):
            if not (directory / "memory.stat").exists():
                continue  # the same container's directory in another v1 hierarchy (blkio, cpu, …)
            stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
            if "total_rss" in stat:  # cgroup v1
                return int(stat["total_rss"]), int((directory / "memory.usage_in_bytes").read_text())
            if "anon" in stat:  # cgroup v2
                return int(stat["anon"]), int((directory / "memory.current").read_text())
    raise FileNotFoundError(f"no memory cgroup for the sidecar container {container_id}")


def main() -> int:
    if os.geteuid() != 0:
        print(f"{Path(__file__).name}: the test node needs root (containerd, kubelet, an interface); run it as root")
        return 2
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5, help="pod starts of each kind")
    parser.add_argument("--faults", type=int, default=5, help="memory faults on each setup")
    args = parser.parse_args()
    workdir = scratch_dir("candor-bench-node-")
    cluster = K8sCluster(workdir, ensure_binaries()).start()
    node = Node(cluster=cluster)
    try:
        node.start()
        subprocess.run([str(helm_binary()), f"--kubeconfig={cluster.kubeconfig}", "install", "candor",
                        str(ROOT / "helm" / "candor"), "-n", "candor-system", "--create-namespace", "--wait",
                        "--timeout", "5m"], check=True, capture_output=True)
        cluster.create_namespace(NS)
        # The webhook injects only pods a valid policy governs.
        cluster.apply({"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy",
                       "metadata": {"name": "candor", "namespace": NS}, "spec": POLICY})
        cluster.wait_until(lambda: any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in cluster.api("GET", f"/apis/candor.io/v1alpha1/namespaces/{NS}/healthpolicies/candor")
            .ok().get("status", {}).get("conditions", [])), 60, "the policy Ready")
        plain = [start_to_ready(cluster, inject=False) for _ in range(args.trials)]
        injected = [start_to_ready(cluster, inject=True) for _ in range(args.trials)]

        policy = parse_policy(POLICY)
        cluster.apply(service("candor"), service("probe"), deployment("candor", inject=True),
                      deployment("probe", inject=True, readiness_on_sidecar=True))
        front_a, front_b = free_port(), free_port()
        config = ("global\n    maxconn 200\ndefaults\n    mode http\n    timeout connect 1s\n"
                  "    timeout client 10s\n    timeout server 10s\n"
                  f"frontend fa\n    bind 127.0.0.1:{front_a}\n    default_backend candor\n"
                  f"frontend fb\n    bind 127.0.0.1:{front_b}\n    default_backend probe\n"
                  + declare_slots(render_backend(policy, name="candor", controller="haproxytech"), 4)
                  + declare_slots("backend probe\n    mode http\n    balance roundrobin\n", 4))
        with HAProxyProcess(config) as haproxy, \
                EndpointSliceFollower(cluster, haproxy, NS, "candor", "candor", 4) as with_candor, \
                EndpointSliceFollower(cluster, haproxy, NS, "probe", "probe", 4) as with_probe:
            # One fault lands anywhere in three periods (the app's heartbeat, the sidecar's evaluation,
            # HAProxy's agent poll): the median of a few is the figure, the slowest is printed beside it.
            candor_outs = [fault_to_out(cluster, "candor", "candor", haproxy, with_candor) for _ in range(args.faults)]
            probe_outs = [fault_to_out(cluster, "probe", "probe", haproxy, with_probe) for _ in range(args.faults)]
        rss, usage = sidecar_memory(node, cluster)
    finally:
        node.stop()
        cluster.stop()
        remove_scratch(workdir)

    added = statistics.median(injected) - statistics.median(plain)
    candor_out = statistics.median(candor_outs)
    rows = [
        ("pod create -> Ready, plain (median)", f"{statistics.median(plain):.2f} s", "floor"),
        ("pod create -> Ready, injected (median)", f"{statistics.median(injected):.2f} s",
         f"adds {added:+.2f} s (target <= 1 s)"),
        ("memory > 80 % -> out of HAProxy, Candor agent (median / max)",
         f"{candor_out:.2f} / {max(candor_outs):.2f} s", f"target <= {AGENT_INTER + 1:.0f} s (agent-inter + 1 s)"),
        ("memory > 80 % -> out of HAProxy, readiness probe (median / max)",
         f"{statistics.median(probe_outs):.2f} / {max(probe_outs):.2f} s",
         "floor: default probe, EndpointSlice follower"),
        ("sidecar in the pod: RSS / cgroup usage", f"{rss / 2**20:.1f} / {usage / 2**20:.1f} MiB", "reported"),
    ]
    width = max(len(r[0]) for r in rows)
    results = Results("node")
    table = results.table("measure", "value", "note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>16}  {note}")
        table.add(label, value, note)
    results.target("pod create -> Ready: what injection adds (median)", "<= 1 s", f"{added:+.2f} s", added <= 1.0)
    results.target("memory > 80 % -> out of HAProxy, Candor agent (median)", f"<= {AGENT_INTER + 1:.0f} s",
                   f"{candor_out:.2f} s", candor_out <= AGENT_INTER + 1.0)
    results.write()
    missed = added > 1.0 or candor_out > AGENT_INTER + 1.0
    print("MISSED a target" if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
