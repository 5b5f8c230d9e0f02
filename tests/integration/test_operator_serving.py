"""Through the real API server: a governed pod's readiness waits for its app's serving ports, the webhook
warns about app containers without a readinessProbe, and governed Deployments get a minReadySeconds that
covers the time between Ready and UP in HAProxy, without a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    k8s_cluster.install_crds()
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace],
                         sidecar_image="registry.local/candor-sidecar:test", extra_args=["--verbose"]) as process:
        process.register_webhook()
        yield process


def _policy(cluster: K8sCluster, ns: str, **spec: Any) -> None:
    cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": "web"},
        "spec": valid_spec(selector={"matchLabels": {"app": "web"}}, **spec)}).ok()
    cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-web").status
                       == 200, 30, "policy reconciled")


def _service(cluster: K8sCluster, ns: str) -> None:
    cluster.api("POST", f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}).ok()


APP = {"name": "app", "image": "web:1", "ports": [{"name": "http", "containerPort": 8080}]}


def test_the_sidecar_readiness_waits_for_the_services_target_port_and_the_webhook_warns(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    _service(cluster, ns)
    _policy(cluster, ns, rollout="Manual")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-1", "labels": {"app": "web"}, "annotations": {"candor.io/inject": "true"}},
           "spec": {"containers": [APP]}}
    # The Service index may not have seen the Service yet: the webhook then asks the API server.
    result = cluster.kubectl("-n", ns, "create", "-o", "json", "-f", "-", input=json.dumps(pod))
    sidecar = json.loads(result.stdout)["spec"]["initContainers"][0]
    command = sidecar["command"]
    assert command[command.index("--app-port") + 1] == "8080"  # the named targetPort, resolved for this pod
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/health/app", "port": 9898, "scheme": "HTTP"}
    assert "candor: container app has no readinessProbe" in result.stderr

    probed = {**pod, "metadata": {**pod["metadata"], "name": "web-2"},
              "spec": {"containers": [{**APP, "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]}}
    result = cluster.kubectl("-n", ns, "create", "-o", "json", "-f", "-", input=json.dumps(probed))
    assert "readinessProbe" not in result.stderr


def test_a_governed_deployment_gets_min_ready_seconds_without_a_restart_and_a_higher_one_stays(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    _service(cluster, ns)
    _policy(cluster, ns, rollout="Automatic", httpCheck={"interval": "2s", "rise": 2}, agentCheck={"interval": "1s"})
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"

    def deployment(name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "annotations": {"candor.io/inject": "true"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web", "d": name}},
                         "template": {"metadata": {"labels": {"app": "web", "d": name}},
                                      "spec": {"containers": [APP]}}, **spec}}

    cluster.api("POST", path, deployment("plain")).ok()
    cluster.api("POST", path, deployment("patient", minReadySeconds=60)).ok()
    raised = cluster.wait_until(
        lambda: (d := cluster.api("GET", f"{path}/plain").ok())["spec"].get("minReadySeconds") == 2 and d,
        30, "minReadySeconds raised to the 2 s of endpoint propagation (whatever the policy's checks)")
    assert raised["metadata"]["annotations"]["candor.io/min-ready-seconds"] == "2"
    # Not a template change: the Deployment keeps its one ReplicaSet.
    replicasets = cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets").ok()["items"]
    assert [rs["metadata"]["name"].startswith("plain-") for rs in replicasets].count(True) == 1
    operator.wait_resyncs(1)
    patient = cluster.api("GET", f"{path}/patient").ok()
    assert patient["spec"]["minReadySeconds"] == 60
    assert "candor.io/min-ready-seconds" not in patient["metadata"].get("annotations", {})
