"""Two nodes in one cluster: pods on each reach each other and the host reaches both, and ``kubectl drain``
moves a Deployment's pods from one node to the other, one eviction at a time as its PodDisruptionBudget allows.

The second node (``candor-2``: bridge cnd1, 10.244.81.0/24) has its own containerd and kubelet; both bridges
are on this machine, which routes between the pod subnets.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster.control_plane import K8sCluster
from harness.cluster.node import Node

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="the test node needs root")]

# Answers GET with the name of the node it runs on (the downward API's spec.nodeName).
SERVER = """
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["NODE"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


def _pod_spec(image: str) -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "app", "image": image, "imagePullPolicy": "Never", "command": ["python3", "-c", SERVER],
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        }],
    }


@pytest.fixture
def namespace(node_cluster: K8sCluster) -> Iterator[str]:
    name = node_cluster.create_namespace()
    yield name
    node_cluster.api("DELETE", f"/api/v1/namespaces/{name}")


def _pods(cluster: K8sCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    listed = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector}).ok()
    items: list[dict[str, Any]] = listed["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _ready_pods(cluster: K8sCluster, namespace: str, selector: str, count: int, what: str) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [pod for pod in _pods(cluster, namespace, selector) if _ready(pod)]
        return pods if len(pods) == count else None

    found: list[dict[str, Any]] = cluster.wait_until(ready, 120, what)
    return found


def _get(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
        return str(response.read().decode())


def test_pods_on_two_nodes_reach_each_other_and_the_host_reaches_both(
    node_cluster: K8sCluster, k8s_node: Node, second_node: Node, namespace: str,
) -> None:
    image = k8s_node.images[1].name  # the sidecar image: it has python3
    for node in (k8s_node, second_node):
        node_cluster.apply({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": f"on-{node.name}", "namespace": namespace, "labels": {"app": "echo"}},
                            "spec": {**_pod_spec(image), "nodeName": node.name}})
    pods = _ready_pods(node_cluster, namespace, "app=echo", 2, "a ready pod on each node")
    by_node = {pod["spec"]["nodeName"]: pod["status"]["podIP"] for pod in pods}
    for node in (k8s_node, second_node):
        assert ipaddress.ip_address(by_node[node.name]) in node.subnet, f"{node.name}'s pod address"
        assert _get(by_node[node.name]) == node.name  # the host reaches each node's pods
    # A pod on the first node reaches the pod on the second one, across the two bridges.
    fetched = node_cluster.kubectl(
        "exec", "-n", namespace, f"on-{k8s_node.name}", "--", "python3", "-c",
        f"import urllib.request; print(urllib.request.urlopen('http://{by_node[second_node.name]}:8080/',"
        " timeout=5).read().decode())", timeout=60)
    assert fetched.stdout.strip() == second_node.name


def test_kubectl_drain_moves_a_deployment_to_the_other_node_within_its_disruption_budget(
    node_cluster: K8sCluster, k8s_node: Node, second_node: Node, namespace: str,
) -> None:
    image = k8s_node.images[1].name
    node_cluster.kubectl("cordon", second_node.name)  # every replica starts on the first node
    try:
        node_cluster.apply(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": namespace},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "moved"}},
                      "template": {"metadata": {"labels": {"app": "moved"}}, "spec": _pod_spec(image)}}},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
             "metadata": {"name": "echo", "namespace": namespace},
             "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "moved"}}}},
        )
        before = _ready_pods(node_cluster, namespace, "app=moved", 2, "two ready replicas on the first node")
        assert {pod["spec"]["nodeName"] for pod in before} == {k8s_node.name}
        node_cluster.kubectl("uncordon", second_node.name)
        # kubectl drain evicts (the PDB lets one go at a time) and waits until the evicted pods are gone.
        drained = node_cluster.kubectl("drain", k8s_node.name, "--pod-selector=app=moved", "--timeout=180s",
                                       timeout=200)
        assert "evicted" in drained.stdout, drained.stdout
        moved = _ready_pods(node_cluster, namespace, "app=moved", 2, "two ready replicas after the drain")
        assert {pod["spec"]["nodeName"] for pod in moved} == {second_node.name}
        assert {_get(pod["status"]["podIP"]) for pod in moved} == {second_node.name}
    finally:
        node_cluster.kubectl("uncordon", k8s_node.name, check=False)
        node_cluster.kubectl("uncordon", second_node.name, check=False)
