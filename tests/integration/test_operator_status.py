"""HealthPolicy status as tools read it, on the real API server with the real operator.

`kubectl wait --for=condition=Ready` works, and is not fooled by a Ready left over from an older spec:
every condition and the status carry the generation they were computed from, which equals
metadata.generation only once that spec is applied. The status counts governed pods with and without
the sidecar, and every change the operator makes gets an Event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candor_operator.api_names import VERSION_ANNOTATION
from candor_operator.crd import CONDITION_REASON_PATTERN
from candor_sidecar.release import VERSION
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec
from tests.integration.test_operator_reconcile import (
    POLICIES,
    annotations,
    events_for,
    make_policy,
    make_service,
    policy_status,
)

pytestmark = pytest.mark.integration

CONDITION_KEYS = {"type", "status", "observedGeneration", "lastTransitionTime", "reason", "message"}


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    k8s_cluster.install_crds()
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace]) as process:
        process.register_webhook()
        yield process


def kubectl_wait(cluster: K8sCluster, ns: str, name: str, timeout: str) -> int:
    return cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", f"--timeout={timeout}",
                           f"healthpolicy/{name}", check=False, timeout=60).returncode


def policy(cluster: K8sCluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.api("GET", f"{POLICIES.format(ns=ns)}/{name}").ok()


def test_kubectl_wait_sees_ready_only_for_the_applied_generation(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    make_service(cluster, ns, "web", {"app": "demo"})
    make_policy(cluster, ns, "demo", valid_spec(httpCheck={"interval": "2s"}))
    assert kubectl_wait(cluster, ns, "demo", "30s") == 0

    first = policy(cluster, ns, "demo")
    assert first["status"]["observedGeneration"] == first["metadata"]["generation"] == 1
    for condition in first["status"]["conditions"]:
        assert set(condition) == CONDITION_KEYS, condition
        assert condition["observedGeneration"] == 1
        assert re.fullmatch(CONDITION_REASON_PATTERN, condition["reason"]), condition
    ready_since = {c["type"]: c["lastTransitionTime"] for c in first["status"]["conditions"]}

    # The operator is down while the spec changes: Ready=True is still there, but from generation 1.
    operator.stop()
    cluster.api("PATCH", f"{POLICIES.format(ns=ns)}/demo", {"spec": {"httpCheck": {"interval": "5s"}}},
                content_type="application/merge-patch+json").ok()
    stale = policy(cluster, ns, "demo")
    assert stale["metadata"]["generation"] == 2
    assert stale["status"]["observedGeneration"] == 1
    assert all(c["observedGeneration"] == 1 for c in stale["status"]["conditions"])
    assert kubectl_wait(cluster, ns, "demo", "2s") != 0, "kubectl wait must not take a Ready of generation 1"

    # Back up: whenever the status says generation 2, the Service already has the new interval.
    operator.start()
    deadline = time.monotonic() + 30
    while (current := policy(cluster, ns, "demo"))["status"]["observedGeneration"] != 2:
        assert annotations(cluster, ns, "web")["haproxy.org/check-interval"] in ("2s", "5s")
        assert time.monotonic() < deadline, current["status"]
        time.sleep(0.05)
    assert annotations(cluster, ns, "web")["haproxy.org/check-interval"] == "5s"
    assert kubectl_wait(cluster, ns, "demo", "30s") == 0
    conditions = current["status"]["conditions"]
    assert all(c["observedGeneration"] == 2 for c in conditions)
    # No condition flipped, so none moved its transition time.
    assert {c["type"]: c["lastTransitionTime"] for c in conditions} == ready_since

    # Drift on the Service is repaired, and the repair is an Event.
    cluster.api("PATCH", f"/api/v1/namespaces/{ns}/services/web",
                {"metadata": {"annotations": {"haproxy.org/check-interval": "1m"}}},
                content_type="application/merge-patch+json").ok()
    cluster.wait_until(lambda: annotations(cluster, ns, "web")["haproxy.org/check-interval"] == "5s", 30,
                       "drift repaired")
    # Whichever handler repaired it first (the Service's own event, or the policy's resync) said so.
    cluster.wait_until(
        lambda: any(e["reason"] == "Annotated" for e in events_for(cluster, ns, "web"))
        or any(e["reason"] == "Reconciled" and "Service web annotations repaired" in e["message"]
               for e in events_for(cluster, ns, "demo")), 30, "an Event about the repair")

def pod(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}


def test_status_counts_governed_pods_with_and_without_the_sidecar(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    make_policy(cluster, ns, "demo", valid_spec())
    assert kubectl_wait(cluster, ns, "demo", "30s") == 0
    for body in (
        pod("asked", {"app": "demo"}, {"candor.io/inject": "true"}),  # the webhook injects it
        pod("plain", {"app": "demo"}),  # governed, never asked: no sidecar
        pod("old", {"app": "demo"}, {"candor.io/status": "injected", VERSION_ANNOTATION: "0.0.1"}),
        pod("elsewhere", {"app": "other"}, {"candor.io/inject": "true"}),  # not governed
    ):
        cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", body).ok()
    stored = cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/asked").ok()
    assert stored["metadata"]["annotations"][VERSION_ANNOTATION] == VERSION

    counts = ("pods", "podsWithSidecar", "podsWithoutSidecar", "podsOtherSidecarVersion")
    status = cluster.wait_until(
        lambda: (s := policy_status(cluster, ns, "demo")).get("pods") == 3 and s, 30, "3 governed pods counted")
    assert {key: status[key] for key in counts} == {
        "pods": 3, "podsWithSidecar": 2, "podsWithoutSidecar": 1, "podsOtherSidecarVersion": 1}
    table = cluster.kubectl("get", "-n", ns, "healthpolicy/demo").stdout
    assert re.search(r"SIDECARS", table) and re.search(r"\bTrue\b.*\b3\s+2\b", table), table

    cluster.api("DELETE", f"/api/v1/namespaces/{ns}/pods/plain", params={"gracePeriodSeconds": "0"}).ok()
    cluster.wait_until(lambda: policy_status(cluster, ns, "demo").get("podsWithoutSidecar") == 0, 30,
                       "the pod without a sidecar is gone from the count")
