"""After an upgrade to a new sidecar, governed Deployments are restarted one at a time, on the real control plane.

Four Deployments run pods an older Candor release injected (`candor.io/version: 0.0.1`, written on the
pods the way that release's webhook did). Three are governed by a `rollout: Automatic` policy, one by a
`rollout: Manual` policy. The operator starts as the new release would after `helm upgrade` and reports
the old sidecars (status and metrics), then restarts the Automatic Deployments in turn: the next only once
the previous rollout is complete, or has exceeded its progressDeadlineSeconds; the Manual one never.

kube-controller-manager runs the Deployments and ReplicaSets, but there is no kubelet: the test plays it,
marking the pods of the Deployments it lets through Running and Ready, so it decides when a rollout may
finish. The operator is restarted mid-queue to show that the queue is found again from the cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor_operator.api_names import CONFIG_HASH_ANNOTATION, STATUS_ANNOTATION, VERSION_ANNOTATION
from candor_operator.rollout import UPGRADE_REASON
from candor_sidecar.release import VERSION
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import CANDOR, OperatorProcess
from tests.cases.policy_cases import valid_spec
from tests.integration.test_operator_reconcile import POLICIES, events_for, policy_status

pytestmark = pytest.mark.integration

DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
IMAGE = "registry.local/candor-sidecar:new"
OLD_HASH = "0ld0ld0ld0ld0ld0"
AUTOMATIC = ["a", "b", "c"]
# The second one restarted is never let through: its rollout ends at this progress deadline, which the test
# gives it then (it has to be above the minReadySeconds the operator sets: 2 s).
DEADLINE = 10
FAST_CHECKS = {"httpCheck": {"interval": "1s", "rise": 1}, "agentCheck": {"interval": "1s"}}


def deployment(name: str, tier: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name, "tier": tier},
                                  "annotations": {CONFIG_HASH_ANNOTATION: OLD_HASH}},
                     "spec": {"containers": [{"name": "app", "image": "demo:1", "ports": [{"containerPort": 8080}]}]}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "annotations": {"candor.io/inject": "true"}}, "spec": spec}


class Kubelet:
    """Marks the pods of the Deployments in `let_through` Running and Ready (the control plane has no node)."""

    def __init__(self, cluster: K8sCluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.let_through: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pod in self.cluster.api("GET", f"/api/v1/namespaces/{self.ns}/pods").ok()["items"]:
                app = pod["metadata"]["labels"].get("app")
                ready = any(c["type"] == "Ready" and c["status"] == "True"
                            for c in (pod.get("status") or {}).get("conditions") or [])
                if app in self.let_through and not ready and not pod["metadata"].get("deletionTimestamp"):
                    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    self.cluster.api("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{pod['metadata']['name']}/status",
                                     {"status": {"phase": "Running", "conditions": [
                                         {"type": "Ready", "status": "True", "lastTransitionTime": now}]}},
                                     content_type="application/merge-patch+json")

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def kubelet(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[Kubelet]:
    with Kubelet(k8s_cluster, k8s_namespace) as running:
        yield running


def deployments(cluster: K8sCluster, ns: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in cluster.api("GET", DEPLOYMENTS.format(ns=ns)).ok()["items"]}


def restarted(found: dict[str, Any]) -> bool:
    return (found["spec"]["template"]["metadata"].get("annotations") or {}).get(CONFIG_HASH_ANNOTATION) != OLD_HASH


def finished(found: dict[str, Any]) -> bool:
    """Complete as `kubectl rollout status` says, or past its progress deadline."""
    status = found.get("status") or {}
    if status.get("observedGeneration", 0) < found["metadata"]["generation"]:
        return False
    if any(c["type"] == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
           for c in status.get("conditions") or []):
        return True
    updated = status.get("updatedReplicas", 0)
    return bool(updated >= found["spec"]["replicas"] and status.get("replicas", 0) <= updated
                and status.get("availableReplicas", 0) >= updated)


class Watcher:
    """Every look at the Deployments checks the promise: at most one restarted rollout unfinished at a time."""

    def __init__(self, cluster: K8sCluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.order: list[str] = []

    def look(self) -> dict[str, dict[str, Any]]:
        found = deployments(self.cluster, self.ns)
        for name in AUTOMATIC:
            if restarted(found[name]) and name not in self.order:
                self.order.append(name)
        rolling = [name for name in AUTOMATIC if restarted(found[name]) and not finished(found[name])]
        assert len(rolling) <= 1, f"several sidecar upgrades under way at once: {rolling}"
        assert not restarted(found["m"]), "a rollout: Manual Deployment was restarted"
        return found

    def restarted(self) -> list[str]:
        found = self.look()
        return [name for name in AUTOMATIC if restarted(found[name])]


def gauges(operator: OperatorProcess, name: str) -> dict[str, float]:
    """One metric's samples by their policy label ("" when it has none)."""
    for family in text_string_to_metric_families(operator.scrape()):
        if family.name == name:
            return {sample.labels.get("policy", ""): sample.value for sample in family.samples}
    raise AssertionError(f"{name} not exported")


def candor_check_hints(cluster: K8sCluster, ns: str) -> dict[str, list[str]]:
    """What `candor check` says of each policy's pods on another release (pod names cut after the Deployment's)."""
    result = subprocess.run([CANDOR, "check", f"--kubeconfig={cluster.kubeconfig}", "-n", ns, "-o", "json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr  # it warns of them (and finds no peered operator: a failure)
    found: dict[str, list[str]] = {}
    for finding in json.loads(result.stdout)["findings"]:
        if finding["area"] == "policy" and "another candor release" in finding["message"]:
            found[finding["subject"].split("/")[1]] = sorted(
                re.sub(r"^pod (\w+-)\S+: (.*); this is \S+", r"pod \1: \2", detail) for detail in finding["details"])
    return found


def test_a_new_sidecar_rolls_one_deployment_at_a_time_and_never_a_manual_one(
    k8s_cluster: K8sCluster, k8s_namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.install_crds()
    for name, tier, rollout in (("auto", "auto", "Automatic"), ("manual", "manual", "Manual")):
        cluster.api("POST", POLICIES.format(ns=ns), {
            "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
            "spec": valid_spec(selector={"matchLabels": {"tier": tier}}, rollout=rollout, **FAST_CHECKS)}).ok()
    # The state an older release left: running pods its webhook injected and stamped.
    for name in AUTOMATIC:
        cluster.api("POST", DEPLOYMENTS.format(ns=ns), deployment(name, "auto")).ok()
    cluster.api("POST", DEPLOYMENTS.format(ns=ns), deployment("m", "manual")).ok()
    kubelet.let_through = {*AUTOMATIC, "m"}
    cluster.wait_until(lambda: all(finished(d) and d["status"].get("availableReplicas") == 1
                                   for d in deployments(cluster, ns).values()), 60, "the old pods available")
    kubelet.let_through = set()  # from now on the test decides which rollout may finish
    for pod in cluster.api("GET", f"/api/v1/namespaces/{ns}/pods").ok()["items"]:
        cluster.api("PATCH", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}",
                    {"metadata": {"annotations": {STATUS_ANNOTATION: "injected", VERSION_ANNOTATION: "0.0.1",
                                                  CONFIG_HASH_ANNOTATION: OLD_HASH}}},
                    content_type="application/merge-patch+json").ok()

    watcher = Watcher(cluster, ns)
    operator = OperatorProcess(cluster, tmp_path, namespaces=[ns], sidecar_image=IMAGE, resync=1.0, metrics=True,
                               extra_args=["--verbose"])
    try:
        operator.register_webhook()  # before the start: the first restarted pods are injected by the new release
        operator.start()

        # Reported: every pod runs another release's sidecar, Manual or not.
        cluster.wait_until(lambda: policy_status(cluster, ns, "manual").get("podsOtherSidecarVersion") == 1
                           and policy_status(cluster, ns, "auto").get("podsOtherSidecarVersion") == 3, 60,
                           "the old sidecars in both policies' status")
        assert gauges(operator, "candor_operator_governed_pods_other_sidecar_version")["manual"] == 1
        hints = candor_check_hints(cluster, ns)
        assert hints["manual"] == ["pod m-: sidecar of candor 0.0.1 (rollout: Manual: restart its Deployment to "
                                   "update it)"], hints
        assert len(hints["auto"]) == 3 and all(h.endswith("(the operator restarts its Deployment, one Deployment at "
                                                          "a time)") for h in hints["auto"]), hints

        # The first one restarts; the other two wait, through resyncs and an operator restart.
        first = cluster.wait_until(watcher.restarted, 60, "a first Deployment restarted")
        assert len(first) == 1, first
        cluster.wait_until(lambda: gauges(operator, "candor_operator_sidecar_upgrades_waiting")[""] == 2, 30,
                           "two Deployments waiting")
        operator.wait_resyncs(3)
        assert watcher.restarted() == first
        operator.stop()
        operator.start()
        cluster.wait_until(lambda: gauges(operator, "candor_operator_sidecar_upgrades_waiting")[""] == 2, 60,
                           "the queue found again after the operator's restart")
        operator.wait_resyncs(3)
        assert watcher.restarted() == first, "a second rollout started while the first had not finished"
        new_pods = [p for p in cluster.api("GET", f"/api/v1/namespaces/{ns}/pods",
                                           params={"labelSelector": f"app={first[0]}"}).ok()["items"]
                    if (p["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION) == VERSION]
        containers = [c for p in new_pods for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]]
        assert any(c["name"] == "candor-sidecar" and c["image"] == IMAGE for c in containers), new_pods

        # The first finishes (its new pod Ready for minReadySeconds, the old one gone): the second starts.
        kubelet.let_through.add(first[0])
        cluster.wait_until(lambda: len(watcher.restarted()) == 2, 90, "a second Deployment restarted once the first "
                           "finished")
        assert finished(deployments(cluster, ns)[first[0]])
        second = watcher.order[1]
        # Its pods never become Ready: its rollout ends when the Deployment controller gives it up, at its
        # progress deadline, and the third starts then, not before (the watcher checks at every look).
        cluster.api("PATCH", f"{DEPLOYMENTS.format(ns=ns)}/{second}", {"spec": {"progressDeadlineSeconds": DEADLINE}},
                    content_type="application/merge-patch+json").ok()
        cluster.wait_until(lambda: len(watcher.restarted()) == 3, DEADLINE + 60, "the third restarted after the "
                           "second's progress deadline")
        assert finished(deployments(cluster, ns)[second])
        third = watcher.order[2]
        kubelet.let_through.add(third)
        cluster.wait_until(lambda: finished(watcher.look()[third]), 60, "the third's rollout complete")
        cluster.wait_until(lambda: gauges(operator, "candor_operator_sidecar_upgrades_waiting")[""] == 0, 30,
                           "no Deployment waiting")
        # Left on the old sidecar: the second's old pod (its new one never became Ready) and the Manual one's.
        cluster.wait_until(lambda: policy_status(cluster, ns, "auto").get("podsOtherSidecarVersion") == 1, 30,
                           "only the second's old pod on the old sidecar")
        assert gauges(operator, "candor_operator_governed_pods_other_sidecar_version") == {"auto": 1, "manual": 1}
        assert sorted(watcher.order) == AUTOMATIC
        for name in AUTOMATIC:
            reasons = [e["reason"] for e in events_for(cluster, ns, name)]
            assert reasons.count(UPGRADE_REASON) == 1, (name, reasons)
        assert UPGRADE_REASON not in [e["reason"] for e in events_for(cluster, ns, "m")]
        print(f"restarted in turn: {watcher.order}; {second} given up at its {DEADLINE} s progress deadline")
    finally:
        operator.stop()
