"""Only governed pods reach the webhook, through the real API server and the real operator.

The webhook's matchConditions let the API server decide without calling Candor: a pod that neither
carries `candor.io/inject: "true"` (label or annotation) nor comes from an annotated Deployment's
template is created at once whether the operator is healthy, stopped, or hung (SIGSTOP: the kernel
accepts the connection and nothing answers, the worst case for the API server, which waits for the
webhook's whole timeout). A governed pod created while the webhook hangs waits that timeout, which
proves the hang was real. hostNetwork pods that ask for injection are admitted without the sidecar
and with a warning naming the field.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_operator.peering import CLUSTER_PEERING_CRD, cluster_peering
from candor_operator.webhook import RBAC_RULES, TIMEOUT_SECONDS
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
IMAGE = "registry.local/candor-sidecar:test"


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    k8s_cluster.install_crds()
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace], sidecar_image=IMAGE) as process:
        process.register_webhook()
        k8s_cluster.api("POST", POLICIES.format(ns=k8s_namespace), {
            "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": "demo"},
            "spec": valid_spec(rollout="Manual")}).ok()
        k8s_cluster.wait_until(
            lambda: k8s_cluster.api("GET", f"/api/v1/namespaces/{k8s_namespace}/configmaps/candor-sidecar-demo").status
            == 200, 30, "policy reconciled")
        yield process
        if process.process is not None and process.process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)


def pod(name: str, governed: bool, **spec: Any) -> dict[str, Any]:
    annotations = {"candor.io/inject": "true"} if governed else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "demo"}, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "demo:1"}], **spec}}


def timed_create(cluster: K8sCluster, ns: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    stored = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", body).ok()
    return time.monotonic() - started, stored


def injected(stored: dict[str, Any]) -> bool:
    return any(c["name"] == "candor-sidecar" for c in stored["spec"].get("initContainers", []))


def test_an_ungoverned_pod_never_waits_for_candor(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    seconds: dict[str, float] = {}
    seconds["healthy, governed"], stored = timed_create(k8s_cluster, k8s_namespace, pod("governed-1", True))
    assert injected(stored)
    seconds["healthy"], stored = timed_create(k8s_cluster, k8s_namespace, pod("plain-1", False))
    assert not injected(stored)

    os.killpg(operator.pid, signal.SIGSTOP)  # hung: connections are accepted by the kernel, nothing answers
    seconds["hung"], stored = timed_create(k8s_cluster, k8s_namespace, pod("plain-2", False))
    assert not injected(stored)
    seconds["hung, governed"], stored = timed_create(k8s_cluster, k8s_namespace, pod("governed-2", True))
    assert not injected(stored)  # failurePolicy Ignore: admitted as it is, after the webhook's timeout
    os.killpg(operator.pid, signal.SIGCONT)

    operator.stop()
    seconds["stopped"], stored = timed_create(k8s_cluster, k8s_namespace, pod("plain-3", False))
    assert not injected(stored)
    print("pod creation, seconds: " + ", ".join(f"{state} {value:.3f}" for state, value in seconds.items()))
    # The governed pod waited the whole timeout: the webhook was really hung, and ungoverned pods skipped it.
    assert seconds["hung, governed"] >= TIMEOUT_SECONDS - 0.5
    for state in ("healthy", "hung", "stopped"):
        assert seconds[state] < 1.0, (state, seconds)


def test_a_hostnetwork_pod_gets_no_sidecar_and_a_warning(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    result = k8s_cluster.kubectl("-n", k8s_namespace, "create", "-o", "json", "-f", "-",
                                 input=json.dumps(pod("on-the-node", True, hostNetwork=True)))
    stored = json.loads(result.stdout)
    assert not injected(stored)
    assert "candor: no sidecar added: spec.hostNetwork: the pod uses the node's network" in result.stderr
    assert stored["metadata"]["annotations"]["candor.io/status"] == "skipped"


def deployment(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "demo", "deploy": name}},
                     "template": {"metadata": {"labels": {"app": "demo", "deploy": name}},
                                  "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}}}


def test_the_template_label_is_written_only_when_the_template_changes_anyway(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    path = f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments"
    born = k8s_cluster.api("POST", path, deployment("born", {"candor.io/inject": "true"})).ok()
    assert born["spec"]["template"]["metadata"]["labels"]["candor.io/inject"] == "true"

    plain = k8s_cluster.api("POST", path, deployment("later", {})).ok()
    assert "candor.io/inject" not in plain["spec"]["template"]["metadata"]["labels"]
    merge = "application/merge-patch+json"
    annotated = k8s_cluster.api("PATCH", f"{path}/later", {"metadata": {"annotations": {"candor.io/inject": "true"}}},
                                content_type=merge).ok()
    # Annotating changes no template: no label, no new generation, no rollout (rollout: Manual restarts nothing).
    assert "candor.io/inject" not in annotated["spec"]["template"]["metadata"]["labels"]
    # (a Deployment's generation counts annotation changes too: its unchanged template is what means no rollout)
    assert annotated["spec"]["template"] == plain["spec"]["template"]
    rolled = k8s_cluster.api("PATCH", f"{path}/later", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "demo:2"}]}}}}, content_type=merge).ok()
    assert rolled["spec"]["template"]["metadata"]["labels"]["candor.io/inject"] == "true"

    other = k8s_cluster.api("POST", path, deployment("ungoverned", {})).ok()
    assert "candor.io/inject" not in other["spec"]["template"]["metadata"]["labels"]


def test_the_operator_is_ready_only_when_its_webhook_answers_and_its_watches_are_answered(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    _, body = k8s_cluster.wait_until(lambda: (s := operator.readiness())[0] == 200 and s, 30, "ready")
    assert body == {"ready": True, "checks": {"watches": "ok", "webhook": "ok"}}
    # An account the API server knows but that may not list HealthPolicies: kopf's watches cannot start.
    token = k8s_cluster.service_account_token(f"no-rights-{k8s_namespace}", [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}], namespace=k8s_namespace)
    kubeconfig = k8s_cluster.kubeconfig_for_token(token, f"no-rights-{k8s_namespace}")
    (tmp_path / "refused").mkdir()
    with OperatorProcess(k8s_cluster, tmp_path / "refused", namespaces=[k8s_namespace], sidecar_image=IMAGE,
                         kubeconfig=kubeconfig) as refused:
        _, body = k8s_cluster.wait_until(lambda: (s := refused.readiness())[0] == 503 and s, 30, "not ready")
        assert body["checks"]["watches"] == "listing HealthPolicies: HTTP 403", body
        assert body["checks"]["webhook"] == "ok", body
    # An account that may do everything but watch Services: kopf's Service watch is never answered.
    rules = [{**rule, "verbs": [v for v in rule["verbs"] if v != "watch"]} if rule["resources"] == ["services"]
             else rule for rule in RBAC_RULES]
    token = k8s_cluster.service_account_token(f"no-watch-{k8s_namespace}", rules, namespace=k8s_namespace)
    kubeconfig = k8s_cluster.kubeconfig_for_token(token, f"no-watch-{k8s_namespace}")
    (tmp_path / "blind").mkdir()
    with OperatorProcess(k8s_cluster, tmp_path / "blind", namespaces=[k8s_namespace], sidecar_image=IMAGE,
                         kubeconfig=kubeconfig) as blind:
        # Until every other kind's watch is open, those are named too; the Service watch is then the only one
        # missing, and stays so.
        blind_on_services = "kopf's watches not answered yet: services"
        _, body = k8s_cluster.wait_until(
            lambda: (s := blind.readiness())[0] == 503 and s[1]["checks"]["watches"] == blind_on_services and s, 30,
            "not ready, for the Service watch alone")
        assert body["checks"]["webhook"] == "ok", body
        status, body = blind.readiness()
        assert status == 503 and body["checks"]["watches"] == blind_on_services, body


def test_the_injected_example_pod_is_admitted_at_pod_security_restricted(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    """Pod Security admission runs after the webhook, on the pod as injected: `restricted` admits it."""
    k8s_cluster.kubectl("label", "namespace", k8s_namespace, "pod-security.kubernetes.io/enforce=restricted")
    documents = [d for d in yaml.safe_load_all((ROOT / "examples" / "demo-app.yaml").read_text()) if d]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    example = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "resizer", "labels": {**template["metadata"]["labels"], "app": "demo"},
                            "annotations": {**template["metadata"]["annotations"], "candor.io/inject": "true"}},
               "spec": template["spec"]}
    result = k8s_cluster.kubectl("-n", k8s_namespace, "create", "-o", "json", "-f", "-", input=json.dumps(example))
    stored = json.loads(result.stdout)
    assert injected(stored)
    assert "violate" not in result.stderr, result.stderr
    # The same pod without its hardening is refused: the namespace really enforces `restricted`.
    loose = json.loads(json.dumps(example))
    loose["metadata"]["name"] = "loose"
    loose["spec"].pop("securityContext")
    refused = k8s_cluster.kubectl("-n", k8s_namespace, "create", "-f", "-", input=json.dumps(loose), check=False)
    assert refused.returncode != 0 and "violates PodSecurity \"restricted" in refused.stderr, refused.stderr


def test_both_peered_replicas_are_ready_the_standby_without_watching(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    """The active replica once its watches are answered; the standby (paused by peering, not watching) too,
    or a rolling update of the operator's Deployment would wait for it forever."""
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    cluster.apply(CLUSTER_PEERING_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/clusterkopfpeerings.kopf.dev")
    cluster.apply(cluster_peering(f"ready-{ns}"))
    replicas = [OperatorProcess(cluster, tmp_path / f"r{i}", namespaces=[ns], standalone=False,
                                extra_args=[f"--priority={100 + i}", f"--peering=ready-{ns}"]) for i in range(2)]
    try:
        for replica in replicas:
            replica.workdir.mkdir()
            replica.start()
        low = replicas[0]
        cluster.wait_until(lambda: "Pausing operations in favour of" in low.log_text(), 30, "the standby pauses")
        for replica in replicas:
            _, body = cluster.wait_until(lambda r=replica: (s := r.readiness())[0] == 200 and s, 30, "ready")
            assert body["checks"] == {"watches": "ok", "webhook": "ok"}, body
    finally:
        for replica in replicas:
            replica.stop()

