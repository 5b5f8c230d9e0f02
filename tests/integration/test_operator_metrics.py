"""The operator's /metrics, scraped by a real Prometheus from two real replicas; promtool checks the exposition
and the chart's alert rules.

Two `candor operator` processes share a kopf peering object: the one with the higher priority is active
(reconciles, exports governed-pod figures), the other stands by (serves admissions, exports
`candor_operator_active_replica 0`), and takes over when the first stops.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_demo.prometheus_process import PrometheusProcess
from candor_operator.peering import CLUSTER_PEERING_CRD, cluster_peering
from candor_sidecar.release import VERSION
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import helm_binary
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec
from tests.integration.test_operator_reconcile import make_policy, make_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = "/usr/bin/promtool"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "demo"}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}


def by_instance(prom: PrometheusProcess, expr: str) -> dict[str, float]:
    return {series["metric"].get("instance", ""): float(series["value"][1]) for series in prom.query(expr)}


def test_prometheus_scrapes_both_replicas_and_sees_what_the_operator_does(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    cluster.install_crds()
    cluster.apply(CLUSTER_PEERING_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/clusterkopfpeerings.kopf.dev")
    cluster.apply(cluster_peering(f"candor-{ns}"))
    replicas = [OperatorProcess(cluster, tmp_path / name, namespaces=[ns], standalone=False, metrics=True,
                                extra_args=[f"--priority={priority}", f"--peering=candor-{ns}"])
                for name, priority in (("low", 100), ("high", 200))]
    low, high = replicas
    targets = {f"127.0.0.1:{r.metrics_port}": r for r in replicas}
    prom = PrometheusProcess({"candor-operator": list(targets)}, scrape_interval=1.0)
    try:
        for replica in replicas:
            replica.workdir.mkdir()
            replica.start()
        high.register_webhook()
        prom.start()
        prom.wait_for_targets_up()
        low_at, high_at = f"127.0.0.1:{low.metrics_port}", f"127.0.0.1:{high.metrics_port}"
        cluster.wait_until(lambda: by_instance(prom, "candor_operator_active_replica") == {low_at: 0, high_at: 1},
                           30, "the higher priority replica active, the other standing by")

        make_service(cluster, ns, "web", {"app": "demo"})
        make_policy(cluster, ns, "demo", valid_spec())
        cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("asked", {"candor.io/inject": "true"})).ok()
        cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("plain")).ok()

        governed = 'candor_operator_governed_pods{policy="demo"}'
        cluster.wait_until(lambda: by_instance(prom, governed) == {high_at: 2}, 60,
                           "the active replica's count of governed pods in Prometheus")
        assert by_instance(prom, 'candor_operator_governed_pods_without_sidecar{policy="demo"}') == {high_at: 1}
        assert by_instance(prom, 'candor_operator_governed_pods_other_sidecar_version{policy="demo"}') == {high_at: 0}
        admissions = 'candor_operator_admissions_total{{decision="{}", reason="{}"}}'
        assert by_instance(prom, admissions.format("injected", ""))[high_at] == 1
        # The pod that did not ask never reached the webhook (its matchConditions): one admission, not two.
        assert by_instance(prom, admissions.format("skipped", "not-requested")).get(high_at, 0) == 0
        assert by_instance(prom, admissions.format("error", ""))[high_at] == 0
        assert by_instance(prom, "candor_operator_admission_duration_seconds_count")[high_at] == 1
        ready = by_instance(prom, 'candor_operator_reconciles_total{result="ready"}')
        assert ready[high_at] >= 1 and ready[low_at] == 0, ready
        assert by_instance(prom, 'candor_operator_reconcile_duration_seconds_count{result="ready"}')[high_at] >= 1
        assert set(by_instance(prom, f'candor_operator_build_info{{version="{VERSION}"}}')) == {low_at, high_at}

        # promtool lints what each replica serves.
        for replica in replicas:
            scraped = replica.scrape()
            result = promtool("check", "metrics", stdin=scraped)
            assert result.returncode == 0, result.stdout + result.stderr

        # The active replica stops: the standby takes over and starts counting.
        high.stop()
        cluster.wait_until(lambda: by_instance(prom, "candor_operator_active_replica").get(low_at) == 1, 60,
                           "the standby to become active")
        cluster.wait_until(lambda: by_instance(prom, governed).get(low_at) == 2, 60,
                           "the new active replica's count of governed pods")
    finally:
        prom.stop()
        for replica in replicas:
            replica.stop()


def test_the_charts_alert_rules_load_in_promtool(tmp_path: Path) -> None:
    rendered = subprocess.run(
        [str(helm_binary()), "template", "candor", str(ROOT / "helm" / "candor"),
         "--api-versions=monitoring.coreos.com/v1/PrometheusRule"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    (rule,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "PrometheusRule"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"CandorPodsWithoutSidecar", "CandorAdmissionErrors", "CandorReconcileFailures",
            "CandorNoActiveOperator"} <= alerts
    without = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "CandorPodsWithoutSidecar")
    assert without["for"] == "10m"
