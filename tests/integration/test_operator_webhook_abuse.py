"""The injection webhook answers every request: malformed bodies straight at its port, odd pods via the API server.

Straight at the port: a body that is an AdmissionReview with a uid always gets a valid AdmissionReview
back (an allowed answer with a warning if anything inside fails); anything else gets a 4xx whose
JSON names the reason; nothing gets a plain-text 500 or hangs. Through the real API server: a pod
over 1 MiB is still injected, and a pod whose names collide with Candor's is admitted unchanged with
a warning naming the field.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candor_operator.admission_server import MAX_BODY_BYTES, MAX_CONTAINERS
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from harness.processes.waiting import wait_until
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
IMAGE = "registry.local/candor-sidecar:test"


def review(**request: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", **request}}


POD_REQUEST: dict[str, Any] = {
    "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "resource": {"group": "", "version": "v1", "resource": "pods"},
    "operation": "CREATE", "namespace": "nowhere", "userInfo": {"username": "tester"},
    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "nowhere"},
               "spec": {"containers": [{"name": "app", "image": "demo:1"}]}},
}

# (name, raw body, expected HTTP status; 200 means a valid AdmissionReview answer)
MALFORMED: list[tuple[str, bytes, int]] = [
    ("empty list", b"[]", 400),
    ("empty object", b"{}", 400),
    ("null", b"null", 400),
    ("a number", b"5", 400),
    ("a string", b'"AdmissionReview"', 400),
    ("empty body", b"", 400),
    ("not JSON", b"<xml/>", 400),
    ("truncated JSON", b'{"request": {"uid": "u', 400),
    ("invalid UTF-8", b'{"request": {"uid": "\xff\xfe"}}', 400),
    ("UTF-16", json.dumps(review()).encode("utf-16"), 400),
    ("100,000-deep list", b"[" * 100_000 + b"]" * 100_000, 400),
    ("100,000-deep object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    ("request is a list", json.dumps({"request": []}).encode(), 400),
    ("missing uid", json.dumps({"request": {"operation": "CREATE"}}).encode(), 400),
    ("uid is a number", json.dumps({"request": {"uid": 7}}).encode(), 400),
    ("empty uid", json.dumps(review(uid="")).encode(), 400),
    ("uid of 1 MB", json.dumps(review(uid="u" * 1_000_000)).encode(), 400),
    ("200,000 empty objects", b'{"request": {"uid": "u", "pad": [' + b"{}," * 200_000 + b"{}]}}", 413),
    ("uid only", json.dumps(review()).encode(), 200),
    ("no userInfo", json.dumps(review(**{k: v for k, v in POD_REQUEST.items() if k != "userInfo"})).encode(), 200),
    ("no object", json.dumps(review(**{k: v for k, v in POD_REQUEST.items() if k != "object"})).encode(), 200),
    ("unknown resource", json.dumps(review(**{**POD_REQUEST, "resource": {"group": "x", "version": "v9",
                                                                            "resource": "things"}})).encode(), 200),
    ("resource is a string", json.dumps(review(**{**POD_REQUEST, "resource": "pods"})).encode(), 200),
    ("object is a list", json.dumps(review(**{**POD_REQUEST, "object": []})).encode(), 200),
    ("spec is a string", json.dumps(review(**{**POD_REQUEST, "object": {"metadata": {}, "spec": "x"}})).encode(), 200),
    ("kind is a number", json.dumps({**review(**POD_REQUEST), "kind": 5, "apiVersion": ["x"]}).encode(), 200),
    ("a valid pod review", json.dumps(review(**POD_REQUEST)).encode(), 200),
]


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    k8s_cluster.install_crds()
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace], sidecar_image=IMAGE) as process:
        process.register_webhook()
        yield process


def post(operator: OperatorProcess, body: bytes, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    assert operator.cert is not None
    context = ssl.create_default_context(cafile=str(operator.cert.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", operator.webhook_port, context=context, timeout=timeout)
    try:
        conn.request("POST", "/candor/inject", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    assert response.getheader("Content-Type", "").startswith("application/json"), (response.status, raw[:200])
    return response.status, json.loads(raw)


def test_every_malformed_review_gets_a_json_answer(operator: OperatorProcess) -> None:
    outcomes = {}
    for name, body, status in MALFORMED:
        got, answer = post(operator, body)
        outcomes[name] = got
        assert got == status, (name, answer)
        if status == 200:
            assert answer["kind"] == "AdmissionReview", name
            assert answer["apiVersion"] == "admission.k8s.io/v1", name
            assert answer["response"]["uid"] == "u-1", name
            # Candor never denies a pod: whatever went wrong inside, the pod is admitted.
            assert answer["response"]["allowed"] is True, (name, answer)
        else:
            assert isinstance(answer["error"], str) and 0 < len(answer["error"]) < 300, (name, answer)
    assert operator.healthy()
    assert len(outcomes) == len(MALFORMED)


def test_a_body_that_never_arrives_is_answered_408_not_held(operator: OperatorProcess) -> None:
    assert operator.cert is not None
    context = ssl.create_default_context(cafile=str(operator.cert.ca_file))
    with socket.create_connection(("127.0.0.1", operator.webhook_port), timeout=30) as raw_socket, \
            context.wrap_socket(raw_socket, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /candor/inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"request\":")
        started = time.monotonic()
        head = tls.recv(4096)
        assert head.startswith(b"HTTP/1.1 408"), head[:100]
        assert time.monotonic() - started < 20


def raw_exchange(operator: OperatorProcess, head: bytes) -> bytes:
    """Send a request head (and nothing more) over TLS; the start of the answer."""
    assert operator.cert is not None
    context = ssl.create_default_context(cafile=str(operator.cert.ca_file))
    with socket.create_connection(("127.0.0.1", operator.webhook_port), timeout=30) as raw_socket, \
            context.wrap_socket(raw_socket, server_hostname="127.0.0.1") as tls:
        tls.sendall(head)
        return tls.recv(4096)


def test_a_body_too_large_or_of_no_declared_size_is_refused_before_it_is_read(operator: OperatorProcess) -> None:
    declared = raw_exchange(operator, b"POST /candor/inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                      b"Content-Length: 9437184\r\n\r\n")
    assert declared.startswith(b"HTTP/1.1 413"), declared[:100]
    assert b"Content-Length: 9437184 bytes is more than an AdmissionReview can be" in declared
    chunked = raw_exchange(operator, b"POST /candor/inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 411"), chunked[:100]
    assert operator.healthy()


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# The chart's memory limit for the operator container (helm/candor/values.yaml resources.limits.memory).
CHART_LIMIT_MIB = 192


def worst_body(size: int) -> bytes:
    """A review with a uid (it passes every shape check) whose object is the costliest JSON the server reads:
    as many `{}` as it accepts, then two-letter strings (a 51-byte str and a pointer for 5 bytes of text)."""
    head, tail = b'{"request": {"uid": "u-1", "object": {"pad": [', b'"ab"]}}}'
    objects = b"{}," * (MAX_CONTAINERS - 10)
    return head + objects + b'"ab",' * ((size - len(head) - len(objects) - len(tail)) // 5) + tail


def test_a_flood_of_maximal_bodies_keeps_memory_under_the_limit_and_reviews_answered(
    operator: OperatorProcess,
) -> None:
    """16 clients sending the costliest body the server reads, as fast as it takes them, 10 bodies each, and 4
    sending 8 MiB bodies of `{}`s.

    Before the lanes, one 8 MiB body of `{}`s took the operator from 40 to 250 MiB; now the peak RSS of
    the whole flood (VmHWM) stays under the chart's limit and an ordinary review is still answered.
    """
    body = worst_body(MAX_BODY_BYTES)
    assert len(body) <= MAX_BODY_BYTES
    idle = rss_kib(operator.pid, "VmRSS")
    sent: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        for _ in range(10):
            if stop.is_set():
                return
            try:
                status, _ = post(operator, body, timeout=60)
                sent.append(status)
            except (OSError, http.client.HTTPException):
                sent.append(0)

    # The attack beside it: 8 MiB of `[{},{},…]` (one such body took the operator from 40 to 250 MiB).
    eight_mib = b"[" + b"{}," * ((8 << 20) // 3) + b"{}]"
    refused: list[int] = []

    def oversized() -> None:
        for _ in range(5):
            try:
                refused.append(post(operator, eight_mib, timeout=60)[0])
            except (OSError, http.client.HTTPException):
                refused.append(0)  # answered 413 and closed while the body was still being sent

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(16)]
    threads += [threading.Thread(target=oversized, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(sent) >= 16, 120, "the flood under way")
        started = time.monotonic()
        status, answer = post(operator, json.dumps(review(**POD_REQUEST)).encode(), timeout=30)
        during = time.monotonic() - started
        assert status == 200 and answer["response"]["allowed"] is True, answer
    except BaseException:
        stop.set()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=300)
    peak = rss_kib(operator.pid, "VmHWM")
    print(f"idle RSS {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB over {len(sent)} bodies of "
          f"{len(body) / 2**20:.2f} MiB (statuses {sorted(set(sent))}); an ordinary review answered in {during:.2f} s")
    assert peak < CHART_LIMIT_MIB * 1024, f"peak RSS {peak / 1024:.0f} MiB"
    assert set(refused) <= {413, 0} and len(refused) == 20, refused
    assert during < 5.0
    assert operator.healthy()
    status, answer = post(operator, json.dumps(review(**POD_REQUEST)).encode())
    assert status == 200, answer


def test_an_unexpected_error_admits_the_pod_unchanged_with_a_warning(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    """The API server trusts an answer over failurePolicy: a denied review would block the pod."""
    policy(k8s_cluster, k8s_namespace, "demo")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "odd", "namespace": k8s_namespace, "labels": ["app", "demo"],
                        "annotations": {"candor.io/inject": "true"}},
           "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}
    status, answer = post(operator, json.dumps(review(**{**POD_REQUEST, "namespace": k8s_namespace,
                                                         "object": pod})).encode())
    assert status == 200, answer
    response = answer["response"]
    assert response["allowed"] is True, answer
    assert "patch" not in response, answer
    assert any(w.startswith("candor: no sidecar added:") for w in response.get("warnings", [])), answer
    assert operator.healthy()


def policy(cluster: K8sCluster, ns: str, name: str) -> None:
    cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
        "spec": valid_spec(rollout="Manual")}).ok()
    cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-{name}").status
                       == 200, 30, f"policy {name} reconciled")


def bare_pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "demo"}, "annotations": {"candor.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "demo:1"}], **spec}}


def create(cluster: K8sCluster, ns: str, pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Create through kubectl, which prints admission warnings on stderr; returns the stored pod and them."""
    result = cluster.kubectl("-n", ns, "create", "-o", "json", "-f", "-", input=json.dumps(pod))
    return json.loads(result.stdout), result.stderr


def test_a_large_pod_is_still_injected(operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    policy(k8s_cluster, k8s_namespace, "demo")
    big = bare_pod("big")
    big["spec"]["containers"][0]["env"] = [{"name": f"FILLER_{n}", "value": "x" * 1000} for n in range(1200)]
    stored, _ = create(k8s_cluster, k8s_namespace, big)
    assert len(json.dumps(big)) > 1_200_000
    assert [c["name"] for c in stored["spec"]["initContainers"]] == ["candor-sidecar"]


@pytest.mark.parametrize(("spec", "field"), [
    ({"volumes": [{"name": "candor-state", "emptyDir": {}}]}, "spec.volumes[0]: a volume named candor-state"),
    ({"volumes": [{"name": "candor-config", "emptyDir": {}}]}, "spec.volumes[0]: a volume named candor-config"),
    ({"volumes": [{"name": "journals", "emptyDir": {}}],
      "containers": [{"name": "app", "image": "demo:1",
                      "volumeMounts": [{"name": "journals", "mountPath": "/var/run/candor"}]}]},
     "spec.containers[0].volumeMounts[0]: volume journals is mounted at /var/run/candor"),
    ({"initContainers": [{"name": "candor-sidecar", "image": "mine:1"}]},
     "spec.initContainers[0]: a container named candor-sidecar"),
], ids=["candor-state volume", "candor-config volume", "other volume at the state dir", "own candor-sidecar"])
def test_a_collision_is_admitted_unchanged_with_a_warning_naming_it(
    operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str, spec: dict[str, Any], field: str
) -> None:
    policy(k8s_cluster, k8s_namespace, "demo")
    stored, warnings = create(k8s_cluster, k8s_namespace, bare_pod("collides", **spec))
    assert f"candor: no sidecar added: {field}" in warnings
    # Marked as seen and skipped (the heal then never restarts its Deployment for it), no sidecar.
    assert stored["metadata"]["annotations"]["candor.io/status"] == "skipped"
    assert [v["name"] for v in stored["spec"].get("volumes", [])
            if not v["name"].startswith("kube-api-access")] == [v["name"] for v in spec.get("volumes", [])]
    assert [c["name"] for c in stored["spec"].get("initContainers", [])] == \
        [c["name"] for c in spec.get("initContainers", [])]
