"""The operator's account writes only what Candor owns, enforced by the real API server.

RBAC cannot say "only these annotations" or "only ConfigMaps named so"; the chart's
ValidatingAdmissionPolicy can. Rendered by helm and applied to a real kube-apiserver, it refuses the
operator's ServiceAccount (bound to exactly the chart's rules) every write outside its lane: a
Deployment's image, replicas or labels, a Service's spec, anyone else's ConfigMap. The same account
still does all of Candor's own writes, and the real operator runs under it with no refusal.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_operator.webhook import RBAC_RULES
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import helm_binary
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "candor"
MERGE = "application/merge-patch+json"
REFUSED = "denied request"


@pytest.fixture
def lane(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[tuple[str, str]]:
    """(release, operator token): the chart's policy and binding applied, an account bound to RBAC_RULES."""
    ns, account = k8s_namespace, f"candor-operator-{k8s_namespace}"
    release = f"lane-{ns[-8:]}"
    rendered = subprocess.run(
        [str(helm_binary()), "template", release, str(CHART), "--namespace", ns,
         "--set", f"serviceAccount.name={account}"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    policies = [o for o in yaml.safe_load_all(rendered)
                if o and o["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]
    assert len(policies) == 2
    k8s_cluster.apply(*policies)
    token = k8s_cluster.service_account_token(account, RBAC_RULES, namespace=ns)
    # The API server loads policies through an informer: wait until a write outside the lane is refused.
    probe = f"/api/v1/namespaces/{ns}/configmaps"

    def refused() -> bool:
        response = k8s_cluster.api("POST", probe, configmap("probe"), token=token)
        if response.status < 300:
            k8s_cluster.api("DELETE", f"{probe}/probe")
            return False
        return REFUSED in str(response.body)
    k8s_cluster.wait_until(refused, 30, "the admission policy in effect")
    yield release, token
    for kind, plural in (("ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings"),
                         ("ValidatingAdmissionPolicy", "validatingadmissionpolicies")):
        for o in policies:
            if o["kind"] == kind:
                k8s_cluster.api("DELETE", f"/apis/admissionregistration.k8s.io/v1/{plural}/{o['metadata']['name']}")


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def deployment(name: str, replicas: int = 0) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"team": "shop"}, "annotations": {"candor.io/inject": "true"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "demo"}},
                     "template": {"metadata": {"labels": {"app": "demo"}},
                                  "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}}}


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": {"team.example/owner": "shop"}},
            "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def test_the_operators_account_cannot_write_outside_its_lane(
    lane: tuple[str, str], k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    _, token = lane
    ns, cluster = k8s_namespace, k8s_cluster
    deployments, services = f"/apis/apps/v1/namespaces/{ns}/deployments", f"/api/v1/namespaces/{ns}/services"
    configmaps = f"/api/v1/namespaces/{ns}/configmaps"
    cluster.api("POST", deployments, deployment("web")).ok()
    cluster.api("POST", services, service("web")).ok()
    cluster.api("POST", configmaps, configmap("coredns")).ok()

    def as_operator(method: str, path: str, body: Any = None) -> tuple[int, str]:
        response = cluster.api(method, path, body, token=token,
                               content_type=MERGE if method == "PATCH" else "application/json")
        return response.status, str(response.body)

    # The owner's own minReadySeconds: the operator may raise it (ready_window.py), never lower it.
    cluster.api("PATCH", f"{deployments}/web", {"spec": {"minReadySeconds": 5}}, content_type=MERGE).ok()
    outside = {
        "a Deployment's image": ("PATCH", f"{deployments}/web", {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "evil:1"}]}}}}),
        "a Deployment's replicas": ("PATCH", f"{deployments}/web", {"spec": {"replicas": 50}}),
        "a Deployment's minReadySeconds lowered": ("PATCH", f"{deployments}/web", {"spec": {"minReadySeconds": 0}}),
        "a Deployment's own label": ("PATCH", f"{deployments}/web", {"metadata": {"labels": {"team": "evil"}}}),
        "a pod template's other annotation": ("PATCH", f"{deployments}/web", {"spec": {"template": {"metadata": {
            "annotations": {"sidecar.istio.io/inject": "false"}}}}}),
        "a Service's spec": ("PATCH", f"{services}/web", {"spec": {"selector": {"app": "evil"}}}),
        "a Service's other annotation": ("PATCH", f"{services}/web", {"metadata": {"annotations": {
            "team.example/owner": None}}}),
        "someone else's ConfigMap": ("PATCH", f"{configmaps}/coredns", {"data": {"k": "evil"}}),
        "deleting someone else's ConfigMap": ("DELETE", f"{configmaps}/coredns", None),
        "a ConfigMap of another name": ("POST", configmaps, configmap("aws-auth")),
    }
    for what, (method, path, body) in outside.items():
        status, answer = as_operator(method, path, body)
        assert status in (403, 422) and REFUSED in answer, (what, status, answer[:300])
    assert cluster.api("GET", f"{deployments}/web").ok()["spec"]["template"]["spec"]["containers"][0]["image"] \
        == "demo:1"
    assert cluster.api("GET", f"{configmaps}/coredns").ok()["data"] == {"k": "v"}

    inside = {
        "minReadySeconds raised, with its record": ("PATCH", f"{deployments}/web", {
            "metadata": {"annotations": {"candor.io/min-ready-seconds": "9"}}, "spec": {"minReadySeconds": 9}}),
        "the restart annotation and the webhook's label": ("PATCH", f"{deployments}/web", {"spec": {"template": {
            "metadata": {"annotations": {"candor.io/config-hash": "abc"}, "labels": {"candor.io/inject": "true"}}}}}),
        "HAProxy annotations on a Service": ("PATCH", f"{services}/web", {"metadata": {"annotations": {
            "haproxy.org/check": "true", "candor.io/managed-annotations": "{}"}}}),
        "its sidecar ConfigMap": ("POST", configmaps, configmap("candor-sidecar-web")),
        "changing it": ("PATCH", f"{configmaps}/candor-sidecar-web", {"data": {"k": "w"}}),
        "deleting it": ("DELETE", f"{configmaps}/candor-sidecar-web", None),
    }
    for what, (method, path, body) in inside.items():
        status, answer = as_operator(method, path, body)
        assert status < 300, (what, status, answer[:300])
    # Anyone else is not matched: the Deployment's owner changes its image as before.
    cluster.api("PATCH", f"{deployments}/web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "demo:2"}]}}}}, content_type=MERGE).ok()


def test_the_operator_does_all_its_work_inside_the_lane(
    lane: tuple[str, str], k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    _, token = lane
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    kubeconfig = cluster.kubeconfig_for_token(token, f"lane-{ns}")
    cluster.api("POST", f"/api/v1/namespaces/{ns}/services", service("web")).ok()
    # One pod (Pending: no kubelet) made without the sidecar, so rollout Automatic restarts the Deployment.
    cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", replicas=1)).ok()
    with OperatorProcess(cluster, tmp_path, namespaces=[ns], kubeconfig=kubeconfig) as process:
        cluster.api("POST", f"/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies", {
            "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": "demo"},
            "spec": valid_spec(rollout="Automatic")}).ok()
        cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-demo")
                           .status == 200, 30, "the sidecar ConfigMap written")
        cluster.wait_until(lambda: "haproxy.org/check" in (cluster.api(
            "GET", f"/api/v1/namespaces/{ns}/services/web").ok()["metadata"].get("annotations") or {}),
            30, "the Service annotated")
        template = cluster.wait_until(lambda: (t := cluster.api(
            "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web").ok()["spec"]["template"]["metadata"])
            .get("annotations", {}).get("candor.io/config-hash") and t, 30, "the Deployment restarted")
        assert template["labels"]["candor.io/inject"] == "true"
        cluster.api("DELETE", f"/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies/demo").ok()
        cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-demo")
                           .status == 404, 30, "the sidecar ConfigMap removed")
        log = process.log_text()
        assert REFUSED not in log and not re.search(r"\b403\b|\b422\b", log), log[-3000:]
