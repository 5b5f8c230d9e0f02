"""crds/healthpolicy.yaml in a real kube-apiserver: every invalid policy refused naming its field,
valid ones stored with the documented defaults, printer columns and the status subresource served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_operator.policy import DEFAULTS, parse_policy
from harness.cluster.control_plane import K8sCluster
from tests.cases.policy_cases import FULL_SPEC, INVALID_POLICIES, valid_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"


@pytest.fixture
def crd_namespace(k8s_cluster: K8sCluster, k8s_namespace: str) -> str:
    # The real CRD (another test may have swapped in a relaxed one and put it back).
    k8s_cluster.install_crds(ROOT / "crds" / "healthpolicy.yaml")
    return k8s_namespace


def _post(cluster: K8sCluster, ns: str, name: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name}, "spec": spec})
    return response.status, response.body


def test_every_invalid_policy_is_refused_naming_the_field(k8s_cluster: K8sCluster, crd_namespace: str) -> None:
    wrong: list[str] = []
    for index, (case, spec, field) in enumerate(INVALID_POLICIES):
        status, body = _post(k8s_cluster, crd_namespace, f"bad-{index}", spec)
        causes = {cause.get("field", "") for cause in body.get("details", {}).get("causes", [])}
        if status != 422 or field not in causes:
            wrong.append(f"{case}: HTTP {status}, causes {sorted(causes)}, want {field}: {body.get('message')}")
    assert not wrong, "\n".join(wrong)


def test_valid_policies_are_stored_with_the_documented_defaults(k8s_cluster: K8sCluster, crd_namespace: str) -> None:
    example = yaml.safe_load((ROOT / "examples" / "healthpolicy.yaml").read_text())["spec"]
    for name, spec in (("minimal", valid_spec()), ("full", FULL_SPEC), ("example", example)):
        status, body = _post(k8s_cluster, crd_namespace, name, spec)
        assert status == 201, (name, body.get("message"))
        stored = body["spec"]
        # What the API server stored parses to the same policy as what was sent.
        assert parse_policy(stored) == parse_policy(spec), name
    stored = k8s_cluster.api("GET", f"{POLICIES.format(ns=crd_namespace)}/minimal").ok()["spec"]
    for dotted, default in DEFAULTS.items():
        if dotted.startswith(("passive.", "agentCheck.weight.")):
            continue  # passive checks and load weights stay off unless asked for
        node: Any = stored
        for part in dotted.split("."):
            node = node[part]
        assert node == default, dotted
    assert "passive" not in stored and "maxConn" not in stored and "weight" not in stored["agentCheck"]


def test_unknown_fields_are_pruned_not_stored(k8s_cluster: K8sCluster, crd_namespace: str) -> None:
    status, body = _post(k8s_cluster, crd_namespace, "typo", valid_spec(slowstart="1s"))
    assert status == 201 and "slowstart" not in body["spec"]


def test_printer_columns_and_status_subresource(k8s_cluster: K8sCluster, crd_namespace: str) -> None:
    ns = crd_namespace
    assert _post(k8s_cluster, ns, "shown", valid_spec(ingress={"controller": "haproxy-ingress"}))[0] == 201
    path = f"{POLICIES.format(ns=ns)}/shown/status"
    patch = {"status": {"observedGeneration": 1, "services": 2, "pods": 3, "podsWithSidecar": 2,
                        "podsWithoutSidecar": 1, "serviceNames": ["a", "b"],
                        "configMap": "candor-sidecar-shown",
                        "conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": "ok",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    k8s_cluster.api("PATCH", path, patch, content_type="application/merge-patch+json").ok()
    # A status write through the main resource is ignored: status is a subresource.
    k8s_cluster.api("PATCH", f"{POLICIES.format(ns=ns)}/shown", {"status": {"pods": 99}},
                    content_type="application/merge-patch+json").ok()
    table = k8s_cluster.kubectl("get", "healthpolicies", "-n", ns, "shown").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "CONTROLLER", "SERVICES", "PODS", "SIDECARS", "AGE"]
    assert table[1].split()[:6] == ["shown", "True", "haproxy-ingress", "2", "3", "2"]


def test_conditions_must_have_the_metav1_condition_shape(k8s_cluster: K8sCluster, crd_namespace: str) -> None:
    ns = crd_namespace
    assert _post(k8s_cluster, ns, "shaped", valid_spec())[0] == 201
    path = f"{POLICIES.format(ns=ns)}/shaped/status"
    good = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok", "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}
    for broken, field in (({**good, "reason": "not camel case"}, "reason"), ({**good, "reason": ""}, "reason"),
                          ({k: v for k, v in good.items() if k != "message"}, "message"),
                          ({k: v for k, v in good.items() if k != "lastTransitionTime"}, "lastTransitionTime"),
                          ({**good, "observedGeneration": -1}, "observedGeneration")):
        refused = k8s_cluster.api("PATCH", path, {"status": {"conditions": [broken]}},
                                  content_type="application/merge-patch+json")
        assert refused.status == 422 and field in refused.body["message"], (broken, refused.body)
    k8s_cluster.api("PATCH", path, {"status": {"conditions": [good]}}, content_type="application/merge-patch+json").ok()
