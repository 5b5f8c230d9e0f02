"""The operator turns a governed pod's drain summary into one `Drained` Event on the pod, on the real API server.

There is no kubelet: each pod is bound to a node that does not exist, so a deletion waits (as it waits for a
kubelet to stop the containers), and the test writes the pod's status as the kubelet does when the sidecar
container exits (`status.initContainerStatuses[]`, `state.terminated.message` holding the termination message
file). The operator runs as the chart runs it, with exactly the documented RBAC rules
(candor_operator.webhook.RBAC_RULES).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor_operator.drain_events import read_event_message
from candor_operator.injection import SIDECAR_NAME
from candor_operator.webhook import RBAC_RULES
from candor_sidecar.drain.summary import DrainSummary
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.integration.test_operator_reconcile import events_for

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/{ns}/pods"
REMOVED = DrainSummary(2.13, "removed", "preStop", heard=1, removed=2, silent=0, timed_out=0)
TIMED_OUT = DrainSummary(6.0, "timeout", "preStop", heard=2, removed=0, silent=0, timed_out=1)


def make_pod(cluster: K8sCluster, ns: str, name: str, governed: bool = True) -> None:
    """A pod as the webhook leaves it: the native sidecar (an init container that restarts) beside the app."""
    labels = {"app": "web", **({"candor.io/inject": "true"} if governed else {})}
    cluster.api("POST", PODS.format(ns=ns), {
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "no-kubelet",
                 "initContainers": [{"name": SIDECAR_NAME, "image": "candor-sidecar:test", "restartPolicy": "Always",
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File"}],
                 "containers": [{"name": "app", "image": "demo:1"}]}}).ok()


def leave(cluster: K8sCluster, ns: str, name: str, grace: int = 30) -> None:
    """`kubectl delete pod`: with a grace period the pod stays, marked for deletion, until the kubelet (none
    here) has stopped its containers; 0 removes it at once."""
    cluster.api("DELETE", f"{PODS.format(ns=ns)}/{name}", params={"gracePeriodSeconds": str(grace)}).ok()


def sidecar_exited(cluster: K8sCluster, ns: str, name: str, message: str, phase: str = "Running") -> None:
    """The kubelet's status update once the sidecar container has exited, its termination message copied in."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": 0, "reason": "Completed", "message": message, "startedAt": now, "finishedAt": now}
    cluster.api("PATCH", f"{PODS.format(ns=ns)}/{name}/status", {"status": {
        "phase": phase,
        "initContainerStatuses": [{"name": SIDECAR_NAME, "image": "candor-sidecar:test", "imageID": "", "ready": False,
                                   "restartCount": 0, "started": False, "state": {"terminated": terminated}}],
        "containerStatuses": [{"name": "app", "image": "demo:1", "imageID": "", "ready": False, "restartCount": 0,
                               "started": False, "state": {"terminated": {**terminated, "message": "app's own"}}}],
    }}, content_type="application/merge-patch+json").ok()


def drain_events(cluster: K8sCluster, ns: str, name: str) -> list[dict[str, Any]]:
    return [e for e in events_for(cluster, ns, name) if e["reason"] in ("Drained", "DrainUnreadable")]


def posted(operator: OperatorProcess) -> dict[str, float]:
    """candor_operator_drain_events_total by outcome."""
    return {sample.labels["outcome"]: sample.value for family in text_string_to_metric_families(operator.scrape())
            if family.name == "candor_operator_drain_events" for sample in family.samples
            if sample.name.endswith("_total")}


@pytest.fixture
def kubeconfig(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[Path]:
    k8s_cluster.install_crds()
    name = f"candor-drains-{k8s_namespace}"
    yield k8s_cluster.kubeconfig_for_token(k8s_cluster.service_account_token(name, RBAC_RULES, k8s_namespace), name)
    for pod in k8s_cluster.api("GET", PODS.format(ns=k8s_namespace)).ok()["items"]:  # no kubelet will end them
        leave(k8s_cluster, k8s_namespace, pod["metadata"]["name"], grace=0)


@pytest.fixture
def operator(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path,
             kubeconfig: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(k8s_cluster, tmp_path, namespaces=[k8s_namespace], webhook=False, metrics=True,
                         kubeconfig=kubeconfig) as process:
        yield process


def test_a_leaving_pod_gets_one_event_with_its_figures(operator: OperatorProcess, k8s_cluster: K8sCluster,
                                                       k8s_namespace: str) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    make_pod(cluster, ns, "ungoverned", governed=False)  # no label: the API server never sends it to Candor
    leave(cluster, ns, "ungoverned")
    sidecar_exited(cluster, ns, "ungoverned", REMOVED.message())
    make_pod(cluster, ns, "older")  # a sidecar of a release that writes no summary
    leave(cluster, ns, "older")
    sidecar_exited(cluster, ns, "older", "")
    make_pod(cluster, ns, "restarted")  # its sidecar restarted alone (a failed liveness probe): the pod stays
    sidecar_exited(cluster, ns, "restarted", REMOVED.message())
    make_pod(cluster, ns, "web")
    leave(cluster, ns, "web")
    sidecar_exited(cluster, ns, "web", REMOVED.message())

    (event,) = cluster.wait_until(lambda: drain_events(cluster, ns, "web"), 30, "the Drained Event on web")
    assert (event["type"], event["reason"], event["involvedObject"]["kind"]) == ("Normal", "Drained", "Pod")
    pod = cluster.api("GET", f"{PODS.format(ns=ns)}/web").ok()
    assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
    assert event["message"].startswith("drain took 2.13s (begun by preStop), outcome removed: heard by 1, "
                                       "removed by 2, stopped polling 0, not heard in time 0 (of 3 HAProxys). ")
    assert read_event_message(event["message"]) == REMOVED
    assert event["source"]["component"] == "candor-operator"

    # The pod goes (the kubelet's last word): nothing more is said, and the Event stays.
    leave(cluster, ns, "web", grace=0)
    cluster.wait_until(lambda: cluster.api("GET", f"{PODS.format(ns=ns)}/web").status == 404, 30, "web gone")
    # A pod whose summary arrives first and whose deletion comes next: the deletion tells the operator.
    make_pod(cluster, ns, "gone")
    sidecar_exited(cluster, ns, "gone", TIMED_OUT.message())
    leave(cluster, ns, "gone", grace=0)
    (late,) = cluster.wait_until(lambda: drain_events(cluster, ns, "gone"), 30, "the Event on gone")
    assert (late["type"], late["reason"]) == ("Warning", "Drained")
    assert "not heard in time 1 (of 3 HAProxys). An HAProxy still polling had not heard drain" in late["message"]
    assert len(drain_events(cluster, ns, "web")) == 1
    for quiet in ("ungoverned", "older", "restarted"):
        assert drain_events(cluster, ns, quiet) == [], quiet
    counts = posted(operator)
    assert (counts["removed"], counts["timeout"], counts["heard"], counts["unreadable"]) == (1, 1, 0, 0)
    log = operator.log_text()
    assert not re.search(r"\b403\b|[Ff]orbidden|Traceback", log), log[-3000:]


def test_a_message_that_is_not_a_summary_is_said_and_the_operator_goes_on(
        operator: OperatorProcess, k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    make_pod(cluster, ns, "garbled")
    leave(cluster, ns, "garbled")
    sidecar_exited(cluster, ns, "garbled", '{"drain":{"seconds":"soon"}}')
    (event,) = cluster.wait_until(lambda: drain_events(cluster, ns, "garbled"), 30, "the Event on garbled")
    assert (event["type"], event["reason"]) == ("Warning", "DrainUnreadable")
    assert "not a drain summary: drain.seconds: expected a number of seconds" in event["message"], event["message"]
    assert "garbled: its sidecar's termination message is not a drain summary" in operator.log_text()
    make_pod(cluster, ns, "fine")
    leave(cluster, ns, "fine")
    sidecar_exited(cluster, ns, "fine", REMOVED.message())
    cluster.wait_until(lambda: drain_events(cluster, ns, "fine"), 30, "the Event on the next pod")
    assert operator.process is not None and operator.process.poll() is None
    assert posted(operator)["unreadable"] == 1


def test_a_pod_that_drained_while_the_operator_was_away_gets_its_event_once(
        k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path, kubeconfig: Path) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    make_pod(cluster, ns, "evicted")  # evicted for node pressure: the pod object stays, Failed
    sidecar_exited(cluster, ns, "evicted", REMOVED.message(), phase="Failed")
    with OperatorProcess(cluster, tmp_path, namespaces=[ns], webhook=False, kubeconfig=kubeconfig) as operator:
        cluster.wait_until(lambda: drain_events(cluster, ns, "evicted"), 30, "the Event from the first listing")
        operator.stop()
        operator.start()  # its listing finds the pod again; the Event is there already
        make_pod(cluster, ns, "after")
        leave(cluster, ns, "after")
        sidecar_exited(cluster, ns, "after", REMOVED.message())
        cluster.wait_until(lambda: drain_events(cluster, ns, "after"), 30, "the restarted operator's Event")
    assert len(drain_events(cluster, ns, "evicted")) == 1
