"""Crash safety and replicas: SIGKILL mid-reconcile converges after restart; two peered replicas never fight."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from candor_operator.api_names import MANAGED_ANNOTATIONS
from candor_operator.peering import CLUSTER_PEERING_CRD, cluster_peering
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"


def create_services(cluster: K8sCluster, ns: str, names: list[str]) -> None:
    for name in names:
        cluster.api("POST", f"/api/v1/namespaces/{ns}/services", {
            "metadata": {"name": name, "annotations": {"owner": "user"}},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}).ok()


def create_policies(cluster: K8sCluster, ns: str, names: list[str]) -> None:
    for name in names:
        cluster.api("POST", POLICIES.format(ns=ns), {
            "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
            "spec": valid_spec(selector={"matchLabels": {"app": name}}, maxConn=7)}).ok()


def create_pairs(cluster: K8sCluster, ns: str, count: int, prefix: str = "p") -> list[str]:
    """`count` Services, each governed by its own policy (selector app=<name>)."""
    names = [f"{prefix}{i:03d}" for i in range(count)]
    create_services(cluster, ns, names)
    create_policies(cluster, ns, names)
    return names


def services(cluster: K8sCluster, ns: str) -> dict[str, dict[str, Any]]:
    items = cluster.api("GET", f"/api/v1/namespaces/{ns}/services").ok()["items"]
    return {item["metadata"]["name"]: item for item in items}


def converged(cluster: K8sCluster, ns: str, names: list[str]) -> bool:
    found = services(cluster, ns)
    for name in names:
        annotations = found[name]["metadata"].get("annotations") or {}
        if annotations.get("haproxy.org/pod-maxconn") != "7" or annotations.get("owner") != "user":
            return False
        if json.loads(annotations.get(MANAGED_ANNOTATIONS, "{}")).get("policy") != name:
            return False
    listed = cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps").ok()["items"]
    configmaps = {c["metadata"]["name"] for c in listed}
    if not all(f"candor-sidecar-{name}" in configmaps for name in names):
        return False
    policies = cluster.api("GET", POLICIES.format(ns=ns)).ok()["items"]
    # Ready and naming its Service in status, as a resync would find it.
    ready = {p["metadata"]["name"] for p in policies
             if any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))
             and p.get("status", {}).get("serviceNames") == [p["metadata"]["name"]]}
    return set(names) <= ready


def versions(cluster: K8sCluster, ns: str) -> dict[str, tuple[str, Any]]:
    """resourceVersion and what Candor writes (annotations, status, data) of every Service, ConfigMap, policy."""
    found: dict[str, tuple[str, Any]] = {}
    for kind, path in (("svc", f"/api/v1/namespaces/{ns}/services"), ("cm", f"/api/v1/namespaces/{ns}/configmaps"),
                       ("hp", POLICIES.format(ns=ns))):
        for item in cluster.api("GET", path).ok()["items"]:
            content = (item["metadata"].get("annotations"), item.get("status"), item.get("data"))
            found[f"{kind}/{item['metadata']['name']}"] = (item["metadata"]["resourceVersion"], content)
    return found


def rewritten(before: dict[str, tuple[str, Any]], after: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """What was written between two snapshots: each changed object's content before and after."""
    return {key: {"before": before.get(key, ("", None))[1], "after": content}
            for key, (version, content) in after.items() if before.get(key, ("", None))[0] != version}


def test_sigkill_mid_reconcile_converges_after_restart_and_then_stays_quiet(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    operator = OperatorProcess(cluster, tmp_path, namespaces=[ns], webhook=False, resync=2.0,
                               extra_args=["--verbose"])  # --verbose: its resyncs are logged
    try:
        operator.start()
        names = [f"p{i:03d}" for i in range(80)]
        create_services(cluster, ns, names)
        # Policies keep arriving while the operator works; it is killed at its first write.
        creator = threading.Thread(target=create_policies, args=(cluster, ns, names))
        creator.start()

        def some_done() -> int:
            return sum(1 for s in services(cluster, ns).values()
                       if MANAGED_ANNOTATIONS in (s["metadata"].get("annotations") or {}))

        cluster.wait_until(some_done, 60, "the operator started writing")
        operator.kill()  # SIGKILL: no cleanup, handlers cut wherever they were
        creator.join()
        done_at_kill = some_done()
        assert 0 < done_at_kill < len(names), "the kill must land mid-reconcile"
        operator.start()
        cluster.wait_until(lambda: converged(cluster, ns, names), 90, "convergence after restart")
        # Converged means quiet: a resync (every 2 s) rewrites nothing. Two rounds of every policy's resync
        # are seen in the log first.
        before = versions(cluster, ns)
        operator.wait_resyncs(2 * len(names))
        assert not rewritten(before, versions(cluster, ns))
        print(f"annotated before SIGKILL: {done_at_kill}/{len(names)}")
    finally:
        operator.stop()


def test_two_peered_replicas_one_active_and_a_clean_handover(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    cluster.apply(CLUSTER_PEERING_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/clusterkopfpeerings.kopf.dev")
    cluster.apply(cluster_peering(f"candor-{ns}"))
    replicas = [OperatorProcess(cluster, tmp_path / f"r{i}", namespaces=[ns], standalone=False,
                                extra_args=[f"--priority={100 + i}", f"--peering=candor-{ns}"]) for i in range(2)]
    for replica in replicas:
        replica.workdir.mkdir()
    try:
        for replica in replicas:
            replica.start()
        names = create_pairs(cluster, ns, 10, prefix="a")
        cluster.wait_until(lambda: converged(cluster, ns, names), 60, "convergence with two replicas")
        low, high = replicas
        cluster.wait_until(lambda: "Pausing operations in favour of" in low.log_text(), 30, "the standby pauses")
        assert "Pausing operations" not in high.log_text()
        # The paused standby does not watch, so its indices are empty or stale; its webhook must still inject
        # (the API server may call either replica through the webhook Service).
        low.register_webhook()
        cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"candor.io/inject": "true"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": names[0]}},
                     "template": {"metadata": {"labels": {"app": names[0]}},
                                  "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}}}).ok()
        pod = cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}/pods").ok()["items"], 60,
                                 "a pod from the controller-manager")[0]
        assert pod["spec"]["initContainers"][0]["name"] == "candor-sidecar"
        assert pod["metadata"]["annotations"]["candor.io/policy"] == names[0]
        high.stop()  # SIGTERM: kopf removes its peering record, the standby resumes
        more = create_pairs(cluster, ns, 3, prefix="b")
        cluster.wait_until(lambda: converged(cluster, ns, names + more), 60, "the standby took over")
        assert "Resuming operations" in low.log_text()
    finally:
        for replica in replicas:
            replica.stop()
