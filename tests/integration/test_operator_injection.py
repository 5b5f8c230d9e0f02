"""Pod injection through the real API server: the API server calls the operator's webhook on Pod CREATE.

Deployments are created through the API; the real kube-controller-manager makes the ReplicaSets
and Pods (which stay Pending: there is no kubelet), and each Pod as stored is what the webhook made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candor_tracer.pod_contract import CONTROL_SOCKET
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
IMAGE = "registry.local/candor-sidecar:test"


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    k8s_cluster.install_crds()
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace], sidecar_image=IMAGE,
                         extra_args=["--verbose"]) as process:  # --verbose: its resyncs are logged
        process.register_webhook()
        yield process


def policy(cluster: K8sCluster, ns: str, name: str, **spec: Any) -> None:
    cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
        "spec": valid_spec(**spec)}).ok()
    cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-{name}").status
                       == 200, 30, f"policy {name} reconciled")


def deployment(name: str, annotations: dict[str, str] | None = None, replicas: int = 2,
               template_annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "demo", "deploy": name}},
            "template": {
                "metadata": {"labels": {"app": "demo", "deploy": name}, "annotations": template_annotations or {}},
                "spec": {"containers": [
                    {"name": "app", "image": "demo:1", "resources": {"limits": {"memory": "256Mi"}}},
                    {"name": "helper", "image": "demo:1"},
                ]},
            },
        },
    }


def pods(cluster: K8sCluster, ns: str, deploy: str) -> list[dict[str, Any]]:
    items = cluster.api("GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"deploy={deploy}"}).ok()
    return list(items["items"])


def wait_pods(cluster: K8sCluster, ns: str, deploy: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = pods(cluster, ns, deploy)
        return found if len(found) >= count else None

    return cluster.wait_until(enough, 60, f"{count} pods of {deploy} from the controller-manager")


def assert_injected(pod: dict[str, Any], policy_name: str, final_scrape: float = 20.0) -> None:
    spec = pod["spec"]
    sidecars = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "candor-sidecar"]
    assert len(sidecars) == 1, "exactly one sidecar"
    first = spec["initContainers"][0]
    assert first["name"] == "candor-sidecar" and first["restartPolicy"] == "Always"  # native sidecar, as stored
    assert first["image"] == IMAGE
    env = {e["name"]: e for e in first["env"]}
    assert env["CANDOR_APP_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"]["containerName"] == "app"
    assert env["CANDOR_APP_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"
    context = first["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"] and context["seccompProfile"]["type"] == "RuntimeDefault"
    for container in spec["containers"]:
        names = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert names["CANDOR_STATE_DIR"] == "/var/run/candor", container["name"]
        assert any(m["name"] == "candor-state" for m in container["volumeMounts"]), container["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["candor-state"]
    assert {i["path"] for i in volumes["candor-podinfo"]["downwardAPI"]["items"]} == {"labels", "annotations"}
    assert volumes["candor-config"]["configMap"]["name"] == f"candor-sidecar-{policy_name}"
    assert spec["terminationGracePeriodSeconds"] >= final_scrape + 5
    assert pod["metadata"]["annotations"]["candor.io/status"] == "injected"
    # The drain handshake, as the API server stored it (a native sidecar may carry lifecycle hooks).
    assert first["lifecycle"]["preStop"] == {"exec": {"command": ["candor", "sidecar", "drain",
                                                                  "--control-socket", CONTROL_SOCKET]}}
    grace = first["command"][first["command"].index("--termination-grace-period") + 1]
    assert grace == str(spec["terminationGracePeriodSeconds"])
    assert {"name": "candor-control", "mountPath": "/run/candor-control"} in first["volumeMounts"]
    for container in spec["containers"]:
        assert container["lifecycle"]["preStop"] == {
            "httpGet": {"path": "/drain/wait", "port": 9898, "scheme": "HTTP"}}, container["name"]
        assert all(m["name"] != "candor-control" for m in container["volumeMounts"]), container["name"]


def test_annotated_deployment_gets_pods_with_exactly_one_native_sidecar(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "demo", rollout="Manual", metrics={"finalScrapeTimeout": "40s"})
    cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                deployment("injected", {"candor.io/inject": "true"})).ok()
    cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("plain")).ok()
    for pod in wait_pods(cluster, ns, "injected", 2):
        assert_injected(pod, "demo", final_scrape=40.0)
    for pod in wait_pods(cluster, ns, "plain", 2):
        assert not pod["spec"].get("initContainers"), "a Deployment that did not ask gets no sidecar"
        assert "candor.io/status" not in (pod["metadata"].get("annotations") or {})


def test_template_annotation_and_bare_pods_are_injected_once(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "demo", rollout="Manual")
    cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                deployment("bytemplate", template_annotations={"candor.io/inject": "true"}, replicas=1)).ok()
    assert_injected(wait_pods(cluster, ns, "bytemplate", 1)[0], "demo")
    # A pod that already carries a sidecar (e.g. copied from an injected one) is left alone.
    bare = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "bare", "labels": {"app": "demo", "deploy": "bare"},
                     "annotations": {"candor.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}).ok()
    assert_injected(bare, "demo")
    again = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "copy", "labels": {"app": "demo"}, "annotations": bare["metadata"]["annotations"]},
        "spec": {k: v for k, v in bare["spec"].items() if k in ("containers", "initContainers", "volumes",
                                                                 "terminationGracePeriodSeconds")}}).ok()
    assert [c["name"] for c in again["spec"]["initContainers"]].count("candor-sidecar") == 1


def test_no_matching_policy_means_no_sidecar_and_a_warning(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "other", selector={"matchLabels": {"app": "nothing-here"}})
    created = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "lonely", "labels": {"app": "demo"}, "annotations": {"candor.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}).ok()
    assert not created["spec"].get("initContainers")


def test_rollout_automatic_restarts_a_deployment_when_it_is_annotated(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "demo", rollout="Automatic")
    cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("later", replicas=1)).ok()
    before = wait_pods(cluster, ns, "later", 1)
    assert not before[0]["spec"].get("initContainers")
    cluster.api("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/later",
                {"metadata": {"annotations": {"candor.io/inject": "true"}}},
                content_type="application/merge-patch+json").ok()
    # The operator bumps the template (like `kubectl rollout restart`); the controller-manager makes a new
    # ReplicaSet whose pods go through the webhook.
    injected = cluster.wait_until(
        lambda: [p for p in pods(cluster, ns, "later") if p["metadata"].get("annotations", {}).get("candor.io/status")],
        60, "a restarted pod with the sidecar")
    assert_injected(injected[0], "demo")
    template = cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/later").ok()["spec"]["template"]
    first_hash = template["metadata"]["annotations"]["candor.io/config-hash"]
    # Changing the policy restarts again; an unrelated resync does not.
    cluster.api("PATCH", f"{POLICIES.format(ns=ns)}/demo", {"spec": {"memory": {"maxPercent": 70}}},
                content_type="application/merge-patch+json").ok()
    cluster.wait_until(lambda: cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/later").ok()["spec"][
        "template"]["metadata"]["annotations"]["candor.io/config-hash"] != first_hash, 30, "restart on policy change")
    # A restart is a new pod template; the operator's minReadySeconds raise may still land (it retries on a
    # conflict with the restarts), which changes the generation but restarts nothing, so the template is compared.
    template = cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/later").ok()["spec"]["template"]
    operator.wait_resyncs(2)  # two resyncs: they must not restart anything
    assert cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/later").ok()["spec"][
        "template"] == template


def test_a_deployment_created_annotated_is_not_restarted_for_nothing(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "demo", rollout="Automatic")
    cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                deployment("born", {"candor.io/inject": "true"})).ok()
    for pod in wait_pods(cluster, ns, "born", 2):
        assert_injected(pod, "demo")
        assert pod["metadata"]["annotations"]["candor.io/config-hash"]
    # Its pods got the sidecar at admission: a restart would only churn them, and two resyncs do not.
    operator.wait_resyncs(2)
    replicasets = cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets").ok()["items"]
    assert [rs["metadata"]["name"].startswith("born-") for rs in replicasets].count(True) == 1
    # status.pods counts the governed pods (a resync later).
    cluster.wait_until(lambda: cluster.api("GET", f"{POLICIES.format(ns=ns)}/demo").ok()["status"].get("pods") == 2,
                       30, "status.pods")


def test_own_prestop_hooks_are_composed_or_kept_with_an_admission_warning(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "demo", rollout="Manual", agentCheck={"interval": "1s"}, drain={"maxWait": "3s"})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "hooks", "labels": {"app": "demo"}, "annotations": {"candor.io/inject": "true"}},
           "spec": {"terminationGracePeriodSeconds": 60, "containers": [
               {"name": "app", "image": "demo:1", "lifecycle": {"preStop": {"sleep": {"seconds": 10}}}},
               {"name": "flusher", "image": "demo:1",
                "lifecycle": {"preStop": {"exec": {"command": ["/bin/flush"]}}}}]}}
    # kubectl prints the admission warnings on stderr
    result = cluster.kubectl("-n", ns, "create", "-o", "json", "-f", "-", input=json.dumps(pod))
    stored = json.loads(result.stdout)
    app, flusher = stored["spec"]["containers"]
    assert app["lifecycle"]["preStop"] == {"httpGet": {"path": "/drain/wait?atLeast=10", "port": 9898,
                                                       "scheme": "HTTP"}}
    assert flusher["lifecycle"]["preStop"] == {"exec": {"command": ["/bin/flush"]}}
    assert "candor: container flusher keeps its own preStop hook (exec)" in result.stderr
    assert stored["spec"]["terminationGracePeriodSeconds"] == 60 + 3  # the drain's wait comes on top


def test_a_policy_with_the_drain_disabled_injects_no_hooks(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    policy(cluster, ns, "demo", rollout="Manual", drain={"enabled": False})
    stored = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "nodrain", "labels": {"app": "demo"}, "annotations": {"candor.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}).ok()
    assert stored["spec"]["initContainers"][0]["name"] == "candor-sidecar"
    assert "lifecycle" not in stored["spec"]["initContainers"][0]
    assert "lifecycle" not in stored["spec"]["containers"][0]
    assert stored["spec"]["terminationGracePeriodSeconds"] == 30
