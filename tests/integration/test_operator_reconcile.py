"""The real `candor operator` against the real API server: Services, ConfigMaps, status, conflicts.

Every test runs the operator as a subprocess (`candor operator --kubeconfig ... -n <ns>`) on the
session's kube-apiserver + controller-manager (harness/cluster/control_plane.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candor_operator.api_names import MANAGED_ANNOTATIONS
from candor_operator.peering import CLUSTER_PEERING_CRD, cluster_peering
from candor_operator.webhook import RBAC_RULES
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
USER_ANNOTATIONS = {"team": "payments", "haproxy.org/timeout-server": "50s"}


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    k8s_cluster.install_crds()
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace], webhook=False) as process:
        yield process


def make_service(cluster: K8sCluster, ns: str, name: str, selector: dict[str, str],
                 annotations: dict[str, str] | None = None) -> None:
    cluster.api("POST", f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }).ok()


def make_policy(cluster: K8sCluster, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name}, "spec": spec,
    }).ok()


def annotations(cluster: K8sCluster, ns: str, name: str) -> dict[str, str]:
    body = cluster.api("GET", f"/api/v1/namespaces/{ns}/services/{name}").ok()
    return dict(body["metadata"].get("annotations") or {})


def policy_status(cluster: K8sCluster, ns: str, name: str) -> dict[str, Any]:
    return dict(cluster.api("GET", f"{POLICIES.format(ns=ns)}/{name}").ok().get("status") or {})


def condition(cluster: K8sCluster, ns: str, name: str, kind: str) -> dict[str, Any] | None:
    for entry in policy_status(cluster, ns, name).get("conditions") or []:
        if entry["type"] == kind:
            return dict(entry)
    return None


def candor_keys(found: dict[str, str]) -> set[str]:
    return {key for key in found if key not in USER_ANNOTATIONS}


def events_for(cluster: K8sCluster, ns: str, name: str) -> list[dict[str, Any]]:
    items = cluster.api("GET", f"/api/v1/namespaces/{ns}/events").ok()["items"]
    return [e for e in items if e["involvedObject"].get("name") == name]


def test_create_update_delete_follow_on_services_and_configmap(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    before = {**USER_ANNOTATIONS, "haproxy.org/check-interval": "10s"}  # a user value the policy overrides
    make_service(cluster, ns, "web", {"app": "demo", "tier": "front"}, before)
    make_service(cluster, ns, "other", {"app": "other"}, USER_ANNOTATIONS)
    created = make_policy(cluster, ns, "demo", valid_spec(maxConn=30, httpCheck={"interval": "2s"}))

    found = cluster.wait_until(lambda: "haproxy.org/check" in annotations(cluster, ns, "web") and
                               annotations(cluster, ns, "web"), 30, "Service web annotated")
    assert found["haproxy.org/check"] == "true"
    assert found["haproxy.org/check-interval"] == "2s"
    assert found["haproxy.org/pod-maxconn"] == "30"
    assert {k: found[k] for k in USER_ANNOTATIONS} == USER_ANNOTATIONS
    record = json.loads(found[MANAGED_ANNOTATIONS])
    assert record["policy"] == "demo" and set(record["keys"]) == candor_keys(found) - {MANAGED_ANNOTATIONS}
    assert annotations(cluster, ns, "other") == USER_ANNOTATIONS  # not selected: untouched

    configmap = cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-demo").ok()
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert "maxConn: 30" in configmap["data"]["sidecar.yaml"]

    ready = cluster.wait_until(lambda: (c := condition(cluster, ns, "demo", "Ready")) and c["status"] == "True" and c,
                               30, "Ready=True")
    assert "web" in ready["message"]
    status = policy_status(cluster, ns, "demo")
    assert status["services"] == 1 and status["serviceNames"] == ["web"]
    assert status["configMap"] == "candor-sidecar-demo"
    assert any(e["reason"] == "Reconciled" and "Service web annotated" in e["message"]
               for e in events_for(cluster, ns, "demo"))

    # Update: maxConn removed, interval changed -> exactly that key goes, the user's keys stay.
    cluster.api("PATCH", f"{POLICIES.format(ns=ns)}/demo", [
        {"op": "remove", "path": "/spec/maxConn"},
        {"op": "replace", "path": "/spec/httpCheck/interval", "value": "5s"},
    ], content_type="application/json-patch+json").ok()
    updated = cluster.wait_until(
        lambda: (a := annotations(cluster, ns, "web")).get("haproxy.org/check-interval") == "5s" and a, 30, "update")
    assert "haproxy.org/pod-maxconn" not in updated
    assert {k: updated[k] for k in USER_ANNOTATIONS} == USER_ANNOTATIONS
    cluster.wait_until(lambda: "maxConn" not in cluster.api(
        "GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-demo").ok()["data"]["sidecar.yaml"], 30,
        "ConfigMap updated")

    # Delete: everything Candor wrote goes, the user's overridden value comes back, the ConfigMap goes.
    cluster.api("DELETE", f"{POLICIES.format(ns=ns)}/demo").ok()
    cluster.wait_until(lambda: cluster.api("GET", f"{POLICIES.format(ns=ns)}/demo").status == 404, 30,
                       "policy gone (finalizer released)")
    assert annotations(cluster, ns, "web") == before
    assert annotations(cluster, ns, "other") == USER_ANNOTATIONS
    assert cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-demo").status == 404


def test_services_created_later_and_explicit_service_lists(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    make_policy(cluster, ns, "byname", valid_spec(selector={"matchLabels": {"app": "x"}},
                                                  ingress={"controller": "haproxy-ingress", "services": ["named"]}))
    make_policy(cluster, ns, "byselector", valid_spec())
    cluster.wait_until(lambda: condition(cluster, ns, "byselector", "Ready"), 30, "first reconcile")
    make_service(cluster, ns, "late", {"app": "demo"})
    make_service(cluster, ns, "named", {"app": "something-else"})
    late = cluster.wait_until(lambda: (a := annotations(cluster, ns, "late")).get("haproxy.org/check") and a, 30,
                              "a Service created after the policy is annotated")
    assert json.loads(late[MANAGED_ANNOTATIONS])["policy"] == "byselector"
    named = cluster.wait_until(
        lambda: (a := annotations(cluster, ns, "named")).get("haproxy-ingress.github.io/health-check-uri") and a,
        30, "the explicitly named Service gets haproxy-ingress annotations")
    assert not any(key.startswith("haproxy.org/") for key in named)


def test_drift_is_repaired_and_a_service_that_stops_matching_is_released(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    make_service(cluster, ns, "web", {"app": "demo"}, USER_ANNOTATIONS)
    make_policy(cluster, ns, "demo", valid_spec(maxConn=12))
    cluster.wait_until(lambda: annotations(cluster, ns, "web").get("haproxy.org/pod-maxconn") == "12", 30, "owned")
    # Someone edits a key Candor owns: the Service event puts it back.
    cluster.api("PATCH", f"/api/v1/namespaces/{ns}/services/web",
                {"metadata": {"annotations": {"haproxy.org/pod-maxconn": "999", "note": "mine"}}},
                content_type="application/merge-patch+json").ok()
    cluster.wait_until(lambda: annotations(cluster, ns, "web").get("haproxy.org/pod-maxconn") == "12", 30, "repaired")
    assert annotations(cluster, ns, "web")["note"] == "mine"
    # The Service's selector no longer matches the policy: Candor's keys go, everything else stays.
    cluster.api("PATCH", f"/api/v1/namespaces/{ns}/services/web", {"spec": {"selector": {"app": "elsewhere"}}},
                content_type="application/merge-patch+json").ok()
    cluster.wait_until(lambda: MANAGED_ANNOTATIONS not in annotations(cluster, ns, "web"), 30, "released")
    assert annotations(cluster, ns, "web") == {**USER_ANNOTATIONS, "note": "mine"}
    cluster.wait_until(lambda: policy_status(cluster, ns, "demo").get("services") == 0, 30, "status follows")


def test_two_policies_on_one_service_the_newer_reports_conflict(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    make_service(cluster, ns, "web", {"app": "demo"})
    make_policy(cluster, ns, "first", valid_spec(maxConn=10))
    cluster.wait_until(lambda: annotations(cluster, ns, "web").get("haproxy.org/pod-maxconn") == "10", 30, "first")
    make_policy(cluster, ns, "second", valid_spec(maxConn=99))
    conflict = cluster.wait_until(
        lambda: (c := condition(cluster, ns, "second", "Conflict")) and c["status"] == "True" and c, 30, "Conflict")
    assert "first" in conflict["message"] and "web" in conflict["message"]
    assert condition(cluster, ns, "second", "Ready")["status"] == "False"  # type: ignore[index]
    assert condition(cluster, ns, "first", "Conflict")["status"] == "False"  # type: ignore[index]
    assert annotations(cluster, ns, "web")["haproxy.org/pod-maxconn"] == "10"
    assert any(e["reason"] == "Conflict" for e in events_for(cluster, ns, "second"))

    # The winner goes away: the next in line takes the Service over and its Conflict clears (resync).
    cluster.api("DELETE", f"{POLICIES.format(ns=ns)}/first").ok()
    cluster.wait_until(lambda: annotations(cluster, ns, "web").get("haproxy.org/pod-maxconn") == "99", 30, "handover")
    cluster.wait_until(lambda: (c := condition(cluster, ns, "second", "Ready")) and c["status"] == "True", 30,
                       "second becomes Ready")
    assert json.loads(annotations(cluster, ns, "web")[MANAGED_ANNOTATIONS])["policy"] == "second"


def test_the_documented_rbac_is_enough(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> None:
    """As the chart runs it: cluster-wide, peered, webhook on, as a ServiceAccount bound to exactly RBAC_RULES."""
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    cluster.apply(CLUSTER_PEERING_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/clusterkopfpeerings.kopf.dev")
    peering = f"candor-rbac-{ns}"
    cluster.apply(cluster_peering(peering))
    token = cluster.service_account_token(f"candor-operator-{ns}", RBAC_RULES, namespace=ns)
    kubeconfig = cluster.kubeconfig_for_token(token, f"candor-operator-{ns}")
    make_service(cluster, ns, "web", {"app": "demo"}, USER_ANNOTATIONS)
    with OperatorProcess(cluster, tmp_path, kubeconfig=kubeconfig, standalone=False,
                         extra_args=[f"--peering={peering}"]) as process:
        process.register_webhook(namespaces=[ns])
        make_policy(cluster, ns, "demo", valid_spec(rollout="Manual"))
        cluster.wait_until(lambda: (c := condition(cluster, ns, "demo", "Ready")) and c["status"] == "True", 30,
                           "Ready with the narrow role")
        assert annotations(cluster, ns, "web")["haproxy.org/check"] == "true"
        pod = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", {
            "metadata": {"name": "p", "labels": {"app": "demo"}, "annotations": {"candor.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}).ok()
        assert pod["spec"]["initContainers"][0]["name"] == "candor-sidecar"
        cluster.api("DELETE", f"{POLICIES.format(ns=ns)}/demo").ok()
        cluster.wait_until(lambda: cluster.api("GET", f"{POLICIES.format(ns=ns)}/demo").status == 404, 30, "deleted")
        assert annotations(cluster, ns, "web") == USER_ANNOTATIONS
        status = cluster.api("GET", f"/apis/kopf.dev/v1/clusterkopfpeerings/{peering}").ok().get("status") or {}
        assert status, "the operator keeps its record in the peering object"
        log = process.log_text()
        # \b403\b: a namespace such as t-64403f13e4 holds those digits too
        assert not re.search(r"\b403\b|[Ff]orbidden", log), log[-3000:]
