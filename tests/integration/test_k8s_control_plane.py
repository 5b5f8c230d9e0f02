"""The real control plane does what Candor relies on and a mock would not: validation, status, controllers,
admission webhooks, RBAC, and the kubectl path users take."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cluster.control_plane import ROOT, K8sCluster, KubectlError

pytestmark = pytest.mark.integration

HP_API = "/apis/candor.io/v1alpha1"


@pytest.fixture(scope="module")
def healthpolicy_crd(k8s_cluster: K8sCluster) -> str:
    (name,) = k8s_cluster.install_crds(ROOT / "crds" / "healthpolicy.yaml")
    return name


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
    }


def _causes(body: dict[str, Any]) -> list[dict[str, Any]]:
    causes: list[dict[str, Any]] = body.get("details", {}).get("causes", [])
    return causes


def test_control_plane_is_up_and_reports_its_version(k8s_cluster: K8sCluster) -> None:
    version = k8s_cluster.api("GET", "/version").ok()
    assert version["gitVersion"].startswith("v1.36.")
    assert k8s_cluster.api("GET", "/api/v1/namespaces/default").ok()["status"]["phase"] == "Active"
    assert k8s_cluster.startup_seconds < 20, f"control plane took {k8s_cluster.startup_seconds:.1f} s to be ready"


def test_valid_healthpolicy_is_stored_with_schema_defaults(
    k8s_cluster: K8sCluster, healthpolicy_crd: str, k8s_namespace: str
) -> None:
    created = k8s_cluster.api("POST", f"{HP_API}/namespaces/{k8s_namespace}/healthpolicies", _policy("web")).ok()
    # Defaults come from the CRD's structural schema, applied by the API server itself.
    assert created["spec"]["httpCheck"]["path"] == "/health"
    assert created["spec"]["ingress"]["controller"] == "haproxytech"


@pytest.mark.parametrize(
    ("spec", "field_path"),
    [
        ({"httpCheck": {"port": 70000}}, "spec.httpCheck.port"),  # schema: maximum
        ({"ingress": {"controller": "nginx"}}, "spec.ingress.controller"),  # schema: enum
        ({"httpCheck": {"interval": "soon"}}, "spec.httpCheck.interval"),  # schema: pattern
    ],
)
def test_api_server_rejects_healthpolicy_violating_the_schema(
    k8s_cluster: K8sCluster, healthpolicy_crd: str, k8s_namespace: str, spec: dict[str, Any], field_path: str
) -> None:
    response = k8s_cluster.api("POST", f"{HP_API}/namespaces/{k8s_namespace}/healthpolicies", _policy("bad", **spec))
    assert response.status == 422, response.body
    assert field_path in {cause.get("field") for cause in _causes(response.body)}, response.body


@pytest.mark.parametrize(
    ("spec", "field_path", "words"),
    [
        ({"queueTimeout": "2s"}, "spec.queueTimeout", "maxConn"),
        ({"selector": {}}, "spec.selector", "empty"),
        ({"httpCheck": {"interval": "1s", "timeout": "5s"}}, "spec.httpCheck.timeout", "interval"),
        ({"httpCheck": {"interval": "50ms"}}, "spec.httpCheck.interval", "100ms"),
    ],
)
def test_api_server_rejects_healthpolicy_violating_cel_rules(
    k8s_cluster: K8sCluster, healthpolicy_crd: str, k8s_namespace: str,
    spec: dict[str, Any], field_path: str, words: str,
) -> None:
    response = k8s_cluster.api("POST", f"{HP_API}/namespaces/{k8s_namespace}/healthpolicies", _policy("bad", **spec))
    assert response.status == 422, response.body
    matching = [cause for cause in _causes(response.body) if cause.get("field") == field_path]
    assert matching, response.body
    assert words in matching[0]["message"], matching
    assert k8s_cluster.api("GET", f"{HP_API}/namespaces/{k8s_namespace}/healthpolicies/bad").status == 404


def test_status_subresource_is_separate_from_spec(
    k8s_cluster: K8sCluster, healthpolicy_crd: str, k8s_namespace: str
) -> None:
    path = f"{HP_API}/namespaces/{k8s_namespace}/healthpolicies/web"
    created = k8s_cluster.api(
        "POST", f"{HP_API}/namespaces/{k8s_namespace}/healthpolicies", {**_policy("web"), "status": {"pods": 7}}
    ).ok()
    assert "status" not in created or "pods" not in created["status"]  # status is dropped on create
    generation = created["metadata"]["generation"]

    # Writing through /status changes status only, even when the body carries a different spec.
    changed = copy.deepcopy(created)
    changed["spec"]["maxConn"] = 5
    changed["status"] = {"pods": 3, "services": 1}
    after_status = k8s_cluster.api("PUT", f"{path}/status", changed).ok()
    assert after_status["status"]["pods"] == 3
    assert "maxConn" not in after_status["spec"]
    assert after_status["metadata"]["generation"] == generation

    # Writing the main resource changes spec only, and bumps the generation an operator reconciles against.
    after_spec = k8s_cluster.api(
        "PATCH", path, {"spec": {"maxConn": 9}, "status": {"pods": 0}}, content_type="application/merge-patch+json"
    ).ok()
    assert after_spec["spec"]["maxConn"] == 9
    assert after_spec["status"]["pods"] == 3
    assert after_spec["metadata"]["generation"] == generation + 1


def test_deployment_gets_replicaset_and_pending_pods_from_the_controller_manager(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    labels = {"app": "web"}
    k8s_cluster.api("POST", f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments", {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/web:1"}]},
        }},
    }).ok()

    def pods() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = k8s_cluster.api(
            "GET", f"/api/v1/namespaces/{k8s_namespace}/pods", params={"labelSelector": "app=web"}
        ).ok()["items"]
        return items if len(items) == 2 else []

    found = k8s_cluster.wait_until(pods, 30, "2 Pods created by the ReplicaSet controller")
    (replicaset,) = k8s_cluster.api("GET", f"/apis/apps/v1/namespaces/{k8s_namespace}/replicasets").ok()["items"]
    assert replicaset["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    for pod in found:
        assert pod["metadata"]["ownerReferences"][0]["uid"] == replicaset["metadata"]["uid"]
        assert pod["status"]["phase"] == "Pending"  # no scheduler, no kubelet
        assert "nodeName" not in pod["spec"]


@dataclass
class _Webhook:
    """A tiny mutating webhook: labels every Pod and adds a native sidecar, recording each review."""

    reviews: list[dict[str, Any]] = field(default_factory=list)

    def patch(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        sidecar = {"name": "candor-sidecar", "image": "registry.invalid/candor:1", "restartPolicy": "Always"}
        ops: list[dict[str, Any]] = []
        if "labels" not in pod["metadata"]:
            ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
        ops.append({"op": "add", "path": "/metadata/labels/candor.io~1injected", "value": "true"})
        if "initContainers" not in pod["spec"]:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": []})
        ops.append({"op": "add", "path": "/spec/initContainers/-", "value": sidecar})
        return ops


@pytest.fixture
def webhook_server(k8s_cluster: K8sCluster) -> Iterator[tuple[_Webhook, int, str]]:
    hook = _Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook.reviews.append(review)
            request = review["request"]
            patch = json.dumps(hook.patch(request["object"])).encode()
            answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": request["uid"], "allowed": True, "patchType": "JSONPatch",
                "patch": base64.b64encode(patch).decode(),
            }}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    cert = k8s_cluster.serving_cert("test-webhook")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, server.server_address[1], cert.ca_bundle
    finally:
        server.shutdown()
        server.server_close()


def test_mutating_webhook_on_127_0_0_1_is_called_on_pod_create(
    k8s_cluster: K8sCluster, k8s_namespace: str, webhook_server: tuple[_Webhook, int, str]
) -> None:
    hook, port, ca_bundle = webhook_server
    name = f"candor-test-{uuid.uuid4().hex[:8]}"
    k8s_cluster.api("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", {
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.candor.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 5,
            "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate", "caBundle": ca_bundle},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s_namespace}},
        }],
    }).ok()
    try:
        pod_body = {"metadata": {"name": "app"},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}

        def create() -> dict[str, Any] | None:
            # The API server picks new webhook configurations up asynchronously; retry until it calls us.
            response = k8s_cluster.api("POST", f"/api/v1/namespaces/{k8s_namespace}/pods", pod_body)
            if response.status == 201 and response.body["metadata"].get("labels"):
                return response.body
            if response.status == 201:
                k8s_cluster.api("DELETE", f"/api/v1/namespaces/{k8s_namespace}/pods/app",
                                params={"gracePeriodSeconds": "0"}).ok()
                k8s_cluster.wait_until(
                    lambda: k8s_cluster.api("GET", f"/api/v1/namespaces/{k8s_namespace}/pods/app").status == 404,
                    30, "pod deleted",
                )
            return None

        pod = k8s_cluster.wait_until(create, 30, "Pod CREATE going through the webhook")
        assert pod["metadata"]["labels"]["candor.io/injected"] == "true"
        (sidecar,) = pod["spec"]["initContainers"]
        assert sidecar["name"] == "candor-sidecar"
        assert sidecar["restartPolicy"] == "Always"  # native sidecar, accepted by the API server
        request = hook.reviews[-1]["request"]
        assert request["operation"] == "CREATE"
        assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
        assert request["namespace"] == k8s_namespace
        stored = k8s_cluster.api("GET", f"/api/v1/namespaces/{k8s_namespace}/pods/app").ok()
        assert stored["metadata"]["labels"]["candor.io/injected"] == "true"
    finally:
        k8s_cluster.api("DELETE", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")


def test_service_account_token_with_narrow_cluster_role_gets_403_elsewhere(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    k8s_cluster.api("POST", f"/api/v1/namespaces/{k8s_namespace}/configmaps",
                    {"metadata": {"name": "settings"}, "data": {"a": "1"}}).ok()
    token = k8s_cluster.service_account_token(
        f"reader-{k8s_namespace}", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        namespace=k8s_namespace,
    )
    base = f"/api/v1/namespaces/{k8s_namespace}"
    assert k8s_cluster.api("GET", f"{base}/configmaps/settings", token=token).ok()["data"] == {"a": "1"}
    forbidden = [
        k8s_cluster.api("GET", f"{base}/secrets", token=token),
        k8s_cluster.api("POST", f"{base}/configmaps", {"metadata": {"name": "x"}}, token=token),
        k8s_cluster.api("DELETE", f"{base}/configmaps/settings", token=token),
    ]
    assert [response.status for response in forbidden] == [403, 403, 403], [r.body for r in forbidden]
    assert forbidden[0].body["reason"] == "Forbidden"
    assert k8s_cluster.api("GET", f"{base}/configmaps/settings", token="not-a-token").status == 401

    kubeconfig = k8s_cluster.kubeconfig_for_token(token, f"reader-{k8s_namespace}")
    k8s_cluster.kubectl("get", "configmap", "settings", "-n", k8s_namespace, kubeconfig=kubeconfig)
    with pytest.raises(KubectlError, match=r"(?i)forbidden"):
        k8s_cluster.kubectl("get", "secrets", "-n", k8s_namespace, kubeconfig=kubeconfig)


def _example_files() -> list[Path]:
    return sorted(path for path in (ROOT / "examples").glob("*.y*ml") if path.is_file())


def _example_namespace(policy_name: str) -> str:
    for path in _example_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "HealthPolicy" and doc["metadata"]["name"] == policy_name:
                namespace: str = doc["metadata"].get("namespace", "default")
                return namespace
    raise AssertionError(f"no HealthPolicy {policy_name!r} in examples/")


def test_kubectl_apply_get_annotate_the_user_path(
    k8s_cluster: K8sCluster, healthpolicy_crd: str, k8s_namespace: str, tmp_path: Path
) -> None:
    # The CRD is Established (fixture), so one `kubectl apply -f crds/ -f examples/` works, as users run it;
    # the examples name their namespace ("default"), so they are applied as they are and deleted afterwards.
    namespace_args: list[str] = []
    sources = ["-f", "crds/"]
    if _example_files():
        sources += ["-f", "examples/"]
    else:  # examples/ not written yet: apply a manifest of the same shape instead
        manifest = tmp_path / "policy.yaml"
        manifest.write_text(yaml.safe_dump(_policy("web")))
        sources += ["-f", str(manifest)]
        namespace_args = ["-n", k8s_namespace]
    try:
        applied = k8s_cluster.kubectl("apply", *namespace_args, *sources).stdout
        assert "customresourcedefinition.apiextensions.k8s.io/healthpolicies.candor.io" in applied
        created = [line.split()[0] for line in applied.splitlines() if line.startswith("healthpolicy.candor.io/")]
        assert created, f"kubectl apply created no HealthPolicy: {applied}"
        name = created[0].split("/", 1)[1]
        namespace = k8s_namespace if namespace_args else _example_namespace(name)

        table = k8s_cluster.kubectl("get", "hpol", "-n", namespace).stdout  # short name + printer columns
        assert "CONTROLLER" in table and name in table, table

        k8s_cluster.kubectl("annotate", "healthpolicy", name, "-n", namespace, "candor.io/owner=team-a")
        path = f"{HP_API}/namespaces/{namespace}/healthpolicies/{name}"
        assert k8s_cluster.api("GET", path).ok()["metadata"]["annotations"]["candor.io/owner"] == "team-a"

        # Re-applying the same files changes nothing and keeps the annotation someone added.
        again = k8s_cluster.kubectl("apply", *namespace_args, *sources).stdout.strip()
        assert again and all(line.endswith("unchanged") for line in again.splitlines()), again
        assert k8s_cluster.api("GET", path).ok()["metadata"]["annotations"]["candor.io/owner"] == "team-a"
    finally:
        if not namespace_args:
            k8s_cluster.kubectl("delete", "-f", "examples/", "--ignore-not-found", "--wait=false")
