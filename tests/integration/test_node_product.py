"""Candor on the real test node, the way a user runs it: `helm install`, `kubectl apply -f examples/`, pods.

The chart's operator runs from the image built from operator/Dockerfile (two replicas, kopf peering), the API
server calls its webhook, the demo app's pods get the native sidecar from sidecar/Dockerfile's image. A real
HAProxy on the host is configured from `candor render` for the pods' IPs (the ingress controllers cannot be
built here) and a real Prometheus scrapes the sidecars. Tests in this module run in file order and share the
release; the last one upgrades and uninstalls it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_demo.haproxy_process import HAProxyProcess
from candor_demo.prometheus_process import PrometheusProcess
from candor_demo.truth import read_intervals
from candor_operator.api_names import CONFIG_HASH_ANNOTATION
from candor_operator.policy import parse_policy
from candor_operator.render import Server, render_backend
from candor_sidecar.release import VERSION
from candor_tracer.modes import DEFAULT_HEARTBEAT_INTERVAL
from harness.cluster.components import ROOT
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import helm, install_chart, uninstall_chart
from harness.cluster.node import Node
from harness.processes.ports import free_port
from harness.processes.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="the test node needs root")]

CHART = ROOT / "helm" / "candor"
RELEASE, RELEASE_NS = "candor", "candor-system"
EXAMPLES = ROOT / "examples"
HAPROXY_GLOBAL = """\
global
    maxconn 500
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
"""


def _pods(cluster: K8sCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    return list(cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods",
                            params={"labelSelector": selector}).ok()["items"])


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _wait_ready_pods(cluster: K8sCluster, namespace: str, selector: str, count: int,
                     timeout: float = 180) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = _pods(cluster, namespace, selector)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return live if len(live) == count and all(_ready(p) for p in live) else None

    pods: list[dict[str, Any]] = cluster.wait_until(ready, timeout, f"{count} ready pods {selector} in {namespace}")
    return pods


def _sidecar(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in pod["spec"].get("initContainers", []) if c["name"] == "candor-sidecar"), None)


def _logs(cluster: K8sCluster, namespace: str, pod: str, container: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, pod, "-c", container, check=False).stdout


@pytest.fixture(scope="module")
def release(node_cluster: K8sCluster, k8s_node: Node) -> Iterator[str]:
    install_chart(node_cluster, RELEASE_NS, RELEASE)
    yield RELEASE_NS
    uninstall_chart(node_cluster, RELEASE_NS, RELEASE)


# ------------------------------------------------------------------------------------------------- the chart
def test_helm_install_runs_both_operators_from_the_image_and_peering_elects_one(
    node_cluster: K8sCluster, release: str,
) -> None:
    pods = _wait_ready_pods(node_cluster, release, "app.kubernetes.io/name=candor", 2)
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {f"candor-operator:{VERSION}"}
    # The operator created its ClusterKopfPeering; both replicas announce themselves in it.
    peering = node_cluster.wait_until(
        lambda: (body := node_cluster.api("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/candor").body)
        .get("kind") == "ClusterKopfPeering" and len(body.get("status") or {}) >= 2 and body,
        90, "both replicas in the ClusterKopfPeering")
    assert len(peering["status"]) == 2
    # Exactly one replica pauses in favour of the other.
    paused = node_cluster.wait_until(
        lambda: [p for p in pods if "Pausing operations in favour of"
                 in _logs(node_cluster, release, p["metadata"]["name"], "operator")] or None,
        60, "one replica pausing for its peer")
    assert len(paused) == 1


# ------------------------------------------------------------------------------------------------- examples
@pytest.fixture(scope="module")
def examples(node_cluster: K8sCluster, release: str) -> Iterator[list[dict[str, Any]]]:
    node_cluster.kubectl("apply", "-f", str(EXAMPLES))
    try:
        yield _examples_running(node_cluster)
    finally:
        node_cluster.kubectl("delete", "-f", str(EXAMPLES), "--ignore-not-found", "--wait=false", check=False)


def _rolled_out(cluster: K8sCluster, namespace: str, name: str) -> bool:
    """The Deployment's rollout is over and each of its pods runs the sidecar config the webhook stamped."""
    deployment = cluster.api("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}").ok()
    spec, status = deployment["spec"], deployment.get("status", {})
    replicas = spec["replicas"]
    if not (status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
            and status.get("updatedReplicas") == status.get("readyReplicas") == status.get("replicas") == replicas):
        return False
    selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
    pods = _pods(cluster, namespace, selector)
    return len(pods) == replicas and all(
        _sidecar(p) and CONFIG_HASH_ANNOTATION in (p["metadata"].get("annotations") or {}) for p in pods)


def _examples_running(cluster: K8sCluster) -> list[dict[str, Any]]:
    def injected() -> list[dict[str, Any]] | None:
        if not _rolled_out(cluster, "default", "resizer"):
            return None
        pods = _wait_ready_pods(cluster, "default", "app=resizer", 3)
        # Ready means the app answered its own readiness probe, and its port accepted the sidecar's connection.
        return pods if all(_sidecar(p) and _answers(f"http://{p['status']['podIP']}:8080/memory") for p in pods) \
            else None

    pods: list[dict[str, Any]] = cluster.wait_until(injected, 240, "3 ready resizer pods with the sidecar")
    return pods


def test_examples_run_with_the_native_sidecar_the_policy_is_ready_and_the_service_annotated(
    node_cluster: K8sCluster, examples: list[dict[str, Any]],
) -> None:
    for pod in examples:
        sidecar = _sidecar(pod)
        assert sidecar is not None and sidecar["restartPolicy"] == "Always", pod["spec"]
        assert sidecar["image"] == f"candor-sidecar:{VERSION}"
        statuses = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
        assert statuses["candor-sidecar"]["started"] and statuses["candor-sidecar"]["ready"]
        # The sidecar's readiness waits for the Service's target port (named `http`, resolved to 8080).
        assert sidecar["readinessProbe"]["httpGet"]["path"] == "/health/app"
        assert sidecar["command"][sidecar["command"].index("--app-port") + 1] == "8080"
    policy = node_cluster.api("GET", "/apis/candor.io/v1alpha1/namespaces/default/healthpolicies/resizer").ok()
    ready = {c["type"]: c["status"] for c in policy["status"]["conditions"]}
    assert ready.get("Ready") == "True", policy["status"]
    service = node_cluster.api("GET", "/api/v1/namespaces/default/services/resizer").ok()
    annotations = service["metadata"].get("annotations", {})
    assert any(key.startswith("haproxy.org/") for key in annotations), annotations
    # The endpoint's propagation (2 s, whatever the policy) between a new pod's Ready and an old pod's retirement.
    deployment = node_cluster.api("GET", "/apis/apps/v1/namespaces/default/deployments/resizer").ok()
    assert deployment["spec"].get("minReadySeconds") == 2, deployment["spec"]


# ------------------------------------------------------------------------------------------------- HAProxy
@pytest.fixture(scope="module")
def haproxy(examples: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxyProcess]:
    spec = yaml.safe_load((EXAMPLES / "healthpolicy.yaml").read_text())["spec"]
    policy = parse_policy(spec)
    servers = [Server(p["metadata"]["name"], f"{p['status']['podIP']}:8080") for p in examples]
    front = free_port()
    workdir = tmp_path_factory.mktemp("haproxy")
    config = (HAPROXY_GLOBAL + f"frontend fe\n    bind 127.0.0.1:{front}\n    default_backend candor\n"
              + render_backend(policy, servers, name="candor", controller="haproxytech"))
    with HAProxyProcess(config, workdir=workdir) as process:
        process.front_port = front  # type: ignore[attr-defined]
        for server in servers:
            process.wait_for_status("candor", server.name, "UP", timeout=60)
        yield process


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _post_quietly(url: str) -> None:
    with contextlib.suppress(OSError):  # the connection breaks when the kernel kills the app mid-request
        _post(url)


def _post(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def _routed(haproxy: HAProxyProcess, server: str) -> bool:
    state = haproxy.server_state("candor", server)
    return state.status.split()[0] == "UP" and state.weight > 0


def test_memory_over_80_percent_of_the_real_limit_takes_the_pod_out_and_it_comes_back(
    examples: list[dict[str, Any]], haproxy: HAProxyProcess,
) -> None:
    pod = examples[0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert _routed(haproxy, name)
    filled = _post(f"http://{ip}:8080/memory/fill?percent=88&crossing=80")
    assert filled["limit"] == 256 * 1024 * 1024  # the container's real cgroup limit, read by the app
    out = _wait(lambda: not _routed(haproxy, name), 30, f"{name} out of rotation")
    # agent-inter is 1 s in the example: the agent's next answer says down (bound: inter + 1 s, plus
    # the time the fill itself took after crossing 80 %).
    assert out - filled["crossed_at"] <= 1.0 + 1.0 + 3.0, out - filled["crossed_at"]
    _post(f"http://{ip}:8080/memory/free")
    _wait(lambda: _routed(haproxy, name), 60, f"{name} back in rotation")


def test_maintenance_annotation_reaches_haproxy_through_the_kubelets_downward_api_refresh(
    node_cluster: K8sCluster, examples: list[dict[str, Any]], haproxy: HAProxyProcess,
) -> None:
    name = examples[1]["metadata"]["name"]
    _wait(lambda: _routed(haproxy, name), 60, f"{name} in rotation")
    began = time.monotonic()
    node_cluster.kubectl("annotate", "pod", "-n", "default", name, "candor.io/maintenance=true")
    entered = _wait(lambda: haproxy.server_state("candor", name).status.startswith("MAINT"), 150,
                    f"{name} in MAINT") - began
    began = time.monotonic()
    node_cluster.kubectl("annotate", "pod", "-n", "default", name, "candor.io/maintenance-")
    left = _wait(lambda: _routed(haproxy, name), 150, f"{name} out of MAINT") - began
    print(f"maintenance annotation -> MAINT {entered:.1f} s, removal -> UP {left:.1f} s")


def _wait(predicate: Any, timeout: float, what: str) -> float:
    """Polls until true; returns the time.monotonic() at which it was first seen."""
    seen: float = wait_until(lambda: predicate() and time.monotonic(), timeout, what)
    return seen


# ------------------------------------------------------------------------------------------------- job seconds
JOBS_SPEC = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: jobs, namespace: default, annotations: {candor.io/inject: "true"}}
spec:
  replicas: 1
  selector: {matchLabels: {app: jobs}}
  template:
    metadata: {labels: {app: jobs}}
    spec:
      terminationGracePeriodSeconds: 40
      containers:
        - name: app
          image: candor-sidecar:0.1.0  # tests/unit/test_release_version.py checks the tag
          command: [python, -m, candor_demo.resizer_app]
          args: [--name=jobs, --bind=0.0.0.0, --http-port=8080, --metrics-port=9100,
                 "--truth-file=/truth/$(POD_NAME)-{boot}", --workers=4]
          env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
          resources: {limits: {memory: 128Mi}}
          volumeMounts: [{name: truth, mountPath: /truth}]
      volumes:
        - name: truth
          hostPath: {path: TRUTH_DIR, type: Directory}
---
apiVersion: candor.io/v1alpha1
kind: HealthPolicy
metadata: {name: jobs, namespace: default}
spec:
  selector: {matchLabels: {app: jobs}}
  ingress: {controller: haproxytech, services: []}
  metrics: {finalScrapeTimeout: 20s}
"""


def _truth_seconds(directory: Path, pod: str, kills: list[float], now: float) -> float:
    """Busy seconds in the pod's truth files, one per start of its app (named by its start time): a job a
    kill interrupted ran until the first kill after that start; the last start ended with SIGTERM."""
    total = 0.0
    for path in directory.glob(f"{pod}-*"):
        boot = float(path.name.rsplit("-", 1)[1])
        killed = min((k for k in kills if k >= boot), default=now)
        total += sum((i.end if i.end is not None else killed) - i.start for i in read_intervals(path))
    return total


def _container_pid(node: Node, pod: dict[str, Any], container: str) -> int:
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    container_id = status["containerID"].split("://", 1)[1]
    for line in node._ctr("tasks", "list").stdout.splitlines()[1:]:
        words = line.split()
        if words and words[0] == container_id:
            return int(words[1])
    raise AssertionError(f"no task for container {container_id}")


def test_job_seconds_survive_oom_kill_sigkill_and_pod_deletion(
    node_cluster: K8sCluster, k8s_node: Node, release: str, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    truth_dir = tmp_path_factory.mktemp("truth")
    truth_dir.chmod(0o777)  # the app runs as uid 10001
    node_cluster.kubectl("apply", "-f", "-", input=JOBS_SPEC.replace("TRUTH_DIR", str(truth_dir)))
    prometheus: PrometheusProcess | None = None
    try:
        (pod,) = node_cluster.wait_until(
            lambda: _rolled_out(node_cluster, "default", "jobs")
            and (pods := _wait_ready_pods(node_cluster, "default", "app=jobs", 1)) and _sidecar(pods[0]) and pods,
            240, "the jobs pod with its sidecar")
        ip, pod_name = pod["status"]["podIP"], pod["metadata"]["name"]
        began_wall = time.time()
        prometheus = PrometheusProcess([f"{ip}:9898"], scrape_interval=0.5).start()
        prometheus.wait_for_targets_up(60)
        query = f'sum(job_worked_seconds_total{{instance="{ip}:9898"}})'
        _wait(lambda: (prometheus.query_value(query) or 0) > 3, 60, "job seconds in Prometheus")
        kills: list[float] = []

        # 1. The kernel OOM-kills the app mid-job (its real 128Mi limit); the container restarts.
        app_pid = _container_pid(k8s_node, pod, "app")
        fill = f"http://{ip}:8080/memory/fill?percent=300&crossing=90"
        filling = threading.Thread(target=_post_quietly, args=(fill,), daemon=True)
        filling.start()
        kills.append(_wait(lambda: not Path(f"/proc/{app_pid}").exists(), 60, "the kernel's OOM kill"))
        node_cluster.wait_until(lambda: _restarts(node_cluster, pod_name, "app", "OOMKilled"), 90,
                                "OOMKilled, restarted")

        # 2. SIGKILL from the node, as a kubelet liveness kill or `kill -9` would.
        pod = _wait_ready_pods(node_cluster, "default", "app=jobs", 1)[0]
        app_pid = _container_pid(k8s_node, pod, "app")
        _wait(lambda: (prometheus.query_value(query) or 0) > 0, 30, "scrapes go on")
        os.kill(app_pid, signal.SIGKILL)
        kills.append(time.monotonic())
        node_cluster.wait_until(lambda: _restarts(node_cluster, pod_name, "app", "Error", at_least=2), 90,
                               "SIGKILLed app restarted")
        _wait_ready_pods(node_cluster, "default", "app=jobs", 1)

        # 3. Delete the pod mid-job: app SIGTERM, then the sidecar folds and serves the final scrape.
        node_cluster.kubectl("delete", "pod", "-n", "default", pod_name, "--wait=true", "--timeout=90s")
        deleted = time.monotonic()
        truth = _truth_seconds(truth_dir, pod_name, kills, deleted)
        series = prometheus.query_range(query, began_wall, time.time() + 1, 0.5)  # Prometheus keeps Unix time
        values = [float(v) for _, v in series[0]["values"]] if series else []
        assert values, "Prometheus has the pod's job seconds"
        assert all(b >= a for a, b in itertools.pairwise(values)), "the counter went backwards"
        final = values[-1]
        heartbeat = DEFAULT_HEARTBEAT_INTERVAL  # the example sets none
        workers = 4
        # Every kill may lose at most one heartbeat per in-flight job; nothing is counted twice.
        assert truth - 2 * workers * heartbeat - 1.0 <= final <= truth + 1.0, (final, truth)
        print(f"job seconds: truth {truth:.1f}, Prometheus {final:.1f} after an OOM kill, a SIGKILL and a delete")
    finally:
        if prometheus is not None:
            prometheus.stop()
        node_cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                            input=JOBS_SPEC.replace("TRUTH_DIR", str(truth_dir)), check=False)


def _restarts(cluster: K8sCluster, pod: str, container: str, reason: str, at_least: int = 1) -> bool:
    body = cluster.api("GET", f"/api/v1/namespaces/default/pods/{pod}").ok()
    for status in body["status"].get("containerStatuses", []):
        if status["name"] == container and status.get("restartCount", 0) >= at_least:
            last = status.get("lastState", {}).get("terminated", {})
            return bool(last.get("reason") == reason and status.get("ready"))
    return False


# ------------------------------------------------------------------------------------------------- security
def test_pod_security_restricted_namespace_admits_the_injected_pod(
    node_cluster: K8sCluster, release: str,
) -> None:
    namespace = node_cluster.create_namespace()
    try:
        node_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
        documents = [d for d in yaml.safe_load_all((EXAMPLES / "demo-app.yaml").read_text())
                     if d and d["kind"] == "Deployment"]
        documents.append(yaml.safe_load((EXAMPLES / "healthpolicy.yaml").read_text()))
        for document in documents:
            document["metadata"]["namespace"] = namespace
            if document["kind"] == "Deployment":
                document["spec"]["replicas"] = 1
        node_cluster.apply(*documents)
        (pod,) = node_cluster.wait_until(
            lambda: (pods := _wait_ready_pods(node_cluster, namespace, "app=resizer", 1)) and _sidecar(pods[0])
            and pods, 240, "an injected pod admitted under the restricted profile")
        assert pod["metadata"]["namespace"] == namespace
    finally:
        node_cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")


# ------------------------------------------------------------------------------------------------- upgrade
def test_helm_upgrade_changes_the_crd_and_uninstall_leaves_only_the_healthpolicy_crd(
    node_cluster: K8sCluster, release: str, tmp_path: Path,
) -> None:
    chart = tmp_path / "candor"
    shutil.copytree(CHART, chart)
    crd_file = chart / "files" / "healthpolicy.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["metadata"].setdefault("annotations", {})["candor.io/upgrade-proof"] = "2"
    crd_file.write_text(yaml.safe_dump(crd))
    helm(node_cluster.kubeconfig, "upgrade", RELEASE, str(chart), "--namespace", release, "--wait", "--timeout", "4m")
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/healthpolicies.candor.io"
    served = node_cluster.api("GET", crd_path).ok()
    assert served["metadata"]["annotations"]["candor.io/upgrade-proof"] == "2"
    assert served["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # Removing Candor on purpose (README "Uninstalling"): policies first, while the operator releases them.
    node_cluster.kubectl("delete", "healthpolicies.candor.io", "--all", "-A", "--wait", "--timeout=120s")
    helm(node_cluster.kubeconfig, "uninstall", RELEASE, "--namespace", release, "--wait", "--timeout", "4m")
    kinds = ("all,configmap,secret,serviceaccount,role,rolebinding,clusterrole,clusterrolebinding,"
             "mutatingwebhookconfiguration,validatingadmissionpolicy,validatingadmissionpolicybinding,"
             "customresourcedefinition,job")
    kept: list[str] = []  # the HealthPolicy CRD is a file of the chart: it carries no release label

    def left() -> list[str]:
        return node_cluster.kubectl("get", kinds, "-A", "-l", f"app.kubernetes.io/instance={RELEASE}",
                                   "-o", "name").stdout.split()

    # The operator's pods go when the garbage collector has followed the Deployment's deletion; the
    # HealthPolicy CRD stays (helm.sh/resource-policy: keep), so a reinstall finds every team's policies.
    def pods_left() -> str:
        pods = node_cluster.api("GET", f"/api/v1/namespaces/{release}/pods").ok()["items"]
        return "; ".join(f"{p['metadata']['name']} {p['status'].get('phase')} deleting since "
                         f"{p['metadata'].get('deletionTimestamp')} owners {p['metadata'].get('ownerReferences')} "
                         f"finalizers {p['metadata'].get('finalizers')}" for p in pods)

    try:
        node_cluster.wait_until(lambda: left() == kept, 120, "nothing of the release left")
    except TimeoutError as timeout:
        raise AssertionError(f"still there: {left()}; pods: {pods_left()}") from timeout
    peering_crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusterkopfpeerings.kopf.dev"
    node_cluster.wait_until(lambda: node_cluster.api("GET", peering_crd).status == 404, 60, "peering CRD gone")
    assert node_cluster.api("GET", crd_path).status == 200, "the HealthPolicy CRD outlives the release"
    node_cluster.kubectl("delete", "crd", "healthpolicies.candor.io", "--wait", "--timeout=60s")
    node_cluster.wait_until(lambda: node_cluster.api("GET", crd_path).status == 404, 60, f"{crd_path} gone")
