"""The operator heals what it missed: SIGKILLed mid-reconcile of 50 policies, pods made meanwhile get the sidecar.

While the operator is down its webhook is unreachable, and with `failurePolicy: Ignore` the API server
admits pods without the sidecar. After a restart the operator must find them, even in Deployments whose
template already carries the policy's config hash, and roll those Deployments, so every pod ends with
exactly one sidecar; deleting every policy then leaves no ConfigMap and no Candor annotation behind.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from candor_operator.api_names import MANAGED_ANNOTATIONS
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
IMAGE = "registry.local/candor-sidecar:test"
COUNT = 50
SCALED = 10


def deployment(name: str) -> dict[str, Any]:
    # Recreate: there is no kubelet, so a rolling update would wait forever for new pods to become ready.
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "annotations": {"candor.io/inject": "true"}},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}}}


def create_workloads(cluster: K8sCluster, ns: str, names: list[str]) -> None:
    for name in names:
        cluster.api("POST", f"/api/v1/namespaces/{ns}/services", {
            "metadata": {"name": name, "annotations": {"owner": "user"}},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}).ok()
        cluster.api("POST", DEPLOYMENTS.format(ns=ns), deployment(name)).ok()


def create_policies(cluster: K8sCluster, ns: str, names: list[str]) -> None:
    for name in names:
        cluster.api("POST", POLICIES.format(ns=ns), {
            "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
            "spec": valid_spec(selector={"matchLabels": {"app": name}}, rollout="Automatic")}).ok()


def sidecars(pod: dict[str, Any]) -> int:
    spec = pod["spec"]
    return sum(1 for c in (spec.get("initContainers") or []) + spec["containers"] if c["name"] == "candor-sidecar")


def live_pods(cluster: K8sCluster, ns: str) -> dict[str, list[dict[str, Any]]]:
    """Pods by their Deployment (label app), leaving out pods already being deleted."""
    found: dict[str, list[dict[str, Any]]] = {}
    for pod in cluster.api("GET", f"/api/v1/namespaces/{ns}/pods").ok()["items"]:
        if not pod["metadata"].get("deletionTimestamp"):
            found.setdefault(pod["metadata"]["labels"]["app"], []).append(pod)
    return found


def template_hashes(cluster: K8sCluster, ns: str) -> dict[str, str | None]:
    return {d["metadata"]["name"]: (d["spec"]["template"]["metadata"].get("annotations") or {}).get(
        "candor.io/config-hash") for d in cluster.api("GET", DEPLOYMENTS.format(ns=ns)).ok()["items"]}


def converged(cluster: K8sCluster, ns: str, names: list[str], replicas: dict[str, int]) -> bool:
    pods = live_pods(cluster, ns)
    for name in names:
        mine = pods.get(name, [])
        if len(mine) != replicas[name] or any(sidecars(p) != 1 for p in mine):
            return False
    listed = cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps").ok()["items"]
    configmaps = {c["metadata"]["name"] for c in listed}
    services = cluster.api("GET", f"/api/v1/namespaces/{ns}/services").ok()["items"]
    annotated = {s["metadata"]["name"] for s in services
                 if MANAGED_ANNOTATIONS in (s["metadata"].get("annotations") or {})}
    return all(f"candor-sidecar-{name}" in configmaps and name in annotated for name in names)


def test_sigkill_mid_reconcile_of_50_policies_heals_pods_made_meanwhile_and_leaves_nothing(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    names = [f"h{i:02d}" for i in range(COUNT)]
    operator = OperatorProcess(cluster, tmp_path, namespaces=[ns], sidecar_image=IMAGE, resync=3.0)
    try:
        operator.start()
        operator.register_webhook()
        create_workloads(cluster, ns, names)
        creator = threading.Thread(target=create_policies, args=(cluster, ns, names))
        creator.start()

        def restarted() -> list[str]:
            return [name for name, value in template_hashes(cluster, ns).items() if value]

        def settled_with_sidecar() -> list[str]:
            """Restarted by Candor, and its one pod came back with the sidecar."""
            pods = live_pods(cluster, ns)
            return [name for name in restarted()
                    if len(pods.get(name, [])) == 1 and all(sidecars(p) == 1 for p in pods[name])]

        cluster.wait_until(lambda: len(settled_with_sidecar()) >= SCALED, 120,
                           f"{SCALED} Deployments restarted by Candor with the sidecar")
        operator.kill()  # SIGKILL: no cleanup; its webhook is gone, so the API server now admits pods as they are
        settled_at_kill = settled_with_sidecar()
        scaled = settled_at_kill[:SCALED]
        creator.join()
        done_at_kill = restarted()
        assert len(settled_at_kill) < COUNT, "the kill must land mid-rollout"

        # Scale Deployments whose template already carries the config hash: nothing changes in their template,
        # so only a look at their pods can tell the operator that the new ones lack the sidecar.
        replicas = {name: 2 if name in scaled else 1 for name in names}
        for name in scaled:
            cluster.api("PATCH", f"{DEPLOYMENTS.format(ns=ns)}/{name}/scale", {"spec": {"replicas": 2}},
                        content_type="application/merge-patch+json").ok()

        def missed() -> dict[str, int]:
            pods = live_pods(cluster, ns)
            return {name: n for name in names if (n := sum(1 for p in pods.get(name, []) if sidecars(p) == 0))}

        cluster.wait_until(lambda: all(len(live_pods(cluster, ns).get(name, [])) == 2 for name in scaled), 60,
                           "the scaled Deployments' new pods")
        missed_at_restart = missed()
        assert set(scaled) <= set(missed_at_restart), {
            name: [(p["metadata"]["name"], p["metadata"].get("annotations"), p["metadata"]["creationTimestamp"])
                   for p in live_pods(cluster, ns).get(name, [])] for name in set(scaled) - set(missed_at_restart)}

        restarted_at = time.monotonic()
        operator.start()
        cluster.wait_until(lambda: converged(cluster, ns, names, replicas), 180, "every pod with one sidecar")
        assert missed() == {}
        print(f"restarted before SIGKILL: {len(done_at_kill)}/{COUNT}, with the sidecar: {len(settled_at_kill)}; "
              f"Deployments with pods missing the sidecar at restart: {len(missed_at_restart)}/{COUNT} "
              f"({sum(missed_at_restart.values())} pods); "
              f"converged {time.monotonic() - restarted_at:.1f} s after the restart")

        for name in names:
            cluster.api("DELETE", f"{POLICIES.format(ns=ns)}/{name}").ok()
        cluster.wait_until(lambda: not cluster.api("GET", POLICIES.format(ns=ns)).ok()["items"], 120,
                           "every policy deleted (finalizers released)")
        configmaps = [c["metadata"]["name"] for c in cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps").ok()[
            "items"] if c["metadata"]["name"].startswith("candor-")]
        assert configmaps == []
        for service in cluster.api("GET", f"/api/v1/namespaces/{ns}/services").ok()["items"]:
            assert service["metadata"].get("annotations") == {"owner": "user"}, service["metadata"]
    finally:
        operator.stop()
