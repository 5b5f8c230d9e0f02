"""`candor check` against a real API server, authenticating through an exec credential plugin.

A control plane of its own (the CRD is absent at first, and no other test's operator or webhook is
around). The kubeconfig's user is an exec plugin that prints an ExecCredential with a ServiceAccount
token bound to exactly `CHECK_RBAC_RULES`, so the test also proves the documented RBAC suffices.
Problems are provoked one after the other (CRD missing, operator absent, pods not injected, a sidecar
of another release, the webhook not answering) and the output and exit status are asserted.
Agents' /health needs running pods, hence a node: that part is tested on the node.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_operator.api_names import VERSION_ANNOTATION
from candor_operator.check import CHECK_RBAC_RULES
from candor_operator.crd import build_crd
from candor_operator.peering import CLUSTER_PEERING_CRD, cluster_peering
from candor_sidecar.release import VERSION
from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import CANDOR, OperatorProcess
from tests.cases.policy_cases import valid_spec
from tests.integration.test_operator_reconcile import make_policy, make_service

pytestmark = pytest.mark.integration

PLUGIN = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with (here / "plugin-calls").open("a") as calls:
    calls.write("called\\n")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": (here / "token").read_text().strip()}}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    own = K8sCluster(tmp_path_factory.mktemp("k8s-check"), ensure_binaries()).start()
    try:
        yield own
    finally:
        own.stop()


def exec_kubeconfig(cluster: K8sCluster, where: Path) -> Path:
    """A kubeconfig whose user is an exec credential plugin handing out a token with `CHECK_RBAC_RULES`."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "token").write_text(cluster.service_account_token("candor-check", CHECK_RBAC_RULES))
    (where / "plugin.py").write_text(PLUGIN)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "check",
        "clusters": [{"name": "test", "cluster": {"server": cluster.server,
                                                  "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(where / "plugin.py"), str(where)], "interactiveMode": "Never"}}}],
        "contexts": [{"name": "check", "context": {"cluster": "test", "user": "plugin"}}],
    }
    path = where / "check.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def check(kubeconfig: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """(exit status, the JSON report, the text report)."""
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CANDOR, "check", f"--kubeconfig={kubeconfig}", *args, *extra],
                              capture_output=True, text=True, timeout=120, check=False)
    as_json, as_text = run("-o", "json"), run()
    assert as_json.returncode == as_text.returncode, (as_json.stderr, as_text.stderr)
    assert as_json.returncode in (0, 1), as_json.stderr
    return as_json.returncode, json.loads(as_json.stdout), as_text.stdout


def finding(report: dict[str, Any], area: str, level: str | None = None, text: str = "") -> dict[str, Any]:
    for found in report["findings"]:
        if found["area"] == area and (level is None or found["level"] == level) and text in found["message"]:
            return dict(found)
    raise AssertionError(f"no {level} {area} finding with {text!r} in {json.dumps(report, indent=1)}")


def pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "demo"}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": "demo:1"}]}}


def test_check_names_each_provoked_problem_and_exits_non_zero(cluster: K8sCluster, tmp_path: Path) -> None:
    kubeconfig = exec_kubeconfig(cluster, tmp_path / "auth")
    ns = cluster.create_namespace()
    peering = f"candor-{ns}"
    args = (f"--peering={peering}",)

    # 1. Nothing installed.
    status, report, text = check(kubeconfig, *args)
    assert status == 1
    assert (tmp_path / "auth" / "plugin-calls").read_text().count("called") >= 2, "the exec plugin authenticated"
    finding(report, "crd", "fail", "the HealthPolicy CRD is not installed")
    finding(report, "operator", "fail", "no Candor operator found")
    finding(report, "webhook", "fail", "no injection webhook is configured")
    assert "[FAIL] crd healthpolicies.candor.io: the HealthPolicy CRD is not installed" in text

    # 2. The CRD of an older release (a status field missing), then this release's.
    older = build_crd()
    del older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "podsOtherSidecarVersion"]
    cluster.apply(older)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/healthpolicies.candor.io")
    status, report, _ = check(kubeconfig, *args)
    crd = finding(report, "crd", "warn", "its schema is not the one candor")
    lacks = f"fields candor {VERSION} has that the cluster's CRD lacks: status.podsOtherSidecarVersion"
    assert crd["details"] == [lacks]
    cluster.install_crds()

    # 3. A policy, a pod from before the operator, then the operator and its webhook.
    cluster.apply(CLUSTER_PEERING_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/clusterkopfpeerings.kopf.dev")
    cluster.apply(cluster_peering(peering))
    make_service(cluster, ns, "web", {"app": "demo"})
    make_policy(cluster, ns, "demo", valid_spec())
    early = cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("early", {"candor.io/inject": "true"})).ok()
    # Creation times have whole seconds: let the clock pass the early pod's second before the webhook exists.
    cluster.wait_until(lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                       > early["metadata"]["creationTimestamp"], 5, "the next second")
    status, report, _ = check(kubeconfig, *args)
    finding(report, "crd", "ok")
    finding(report, "policy", "fail", "never reconciled")

    operator = OperatorProcess(cluster, tmp_path, namespaces=[ns], standalone=False, extra_args=args)
    with operator:
        operator.register_webhook()
        cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=30s", "healthpolicy/demo")
        cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("asked", {"candor.io/inject": "true"})).ok()
        cluster.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("plain")).ok()
        cluster.api("POST", f"/api/v1/namespaces/{ns}/pods",
                    pod("old", {"candor.io/status": "injected", VERSION_ANNOTATION: "0.0.1"})).ok()

        status, report, text = check(kubeconfig, *args)
        assert status == 1, text
        finding(report, "operator", "ok", "active replica")
        finding(report, "webhook", "ok", "answering")
        finding(report, "policy", "ok", "Services annotated as rendered: web")
        missing = finding(report, "policy", "fail", "2 of 4 governed pods run without the sidecar")["details"]
        assert any(d.startswith("pod early: created at") and "before the injection webhook existed" in d
                   for d in missing), missing
        assert any(d.startswith("pod plain: not opted in") for d in missing), missing
        other = finding(report, "policy", "warn", "another candor release")["details"]
        assert len(other) == 1 and other[0].startswith("pod old: sidecar of candor 0.0.1"), other
        assert "[FAIL] policy " + f"{ns}/demo: 2 of 4 governed pods run without the sidecar" in text

        # 4. Fixed: the pods without a sidecar and the old one are gone.
        for name in ("early", "plain", "old"):
            cluster.api("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", params={"gracePeriodSeconds": "0"}).ok()
        cluster.wait_until(lambda: len(cluster.api("GET", f"/api/v1/namespaces/{ns}/pods").ok()["items"]) == 1, 30,
                           "the pods deleted")
        status, report, text = check(kubeconfig, *args)
        assert status == 0, text
        assert not [f for f in report["findings"] if f["level"] != "ok"], text
        assert report["ok"] is True and text.endswith("everything is in order\n")

        # Without the right to dry-run pods, the webhook is reported untested, not broken.
        read_only = cluster.kubeconfig_for_token(cluster.service_account_token(
            "candor-check-read-only", [r for r in CHECK_RBAC_RULES if r["verbs"] != ["create"]]), "read-only")
        status, report, _ = check(read_only, *args)
        assert status == 0
        assert "not tested: a test pod (dry run)" in finding(report, "webhook", "warn")["message"]

        # 5. The operator is gone (its webhook configuration stays): no active replica, no webhook answering.
        operator.stop()
        status, report, text = check(kubeconfig, *args)
        assert status == 1
        finding(report, "operator", "fail", "no operator replica is running")
        finding(report, "webhook", "fail", "not answering")


def test_check_says_when_the_cluster_refuses_the_credentials(cluster: K8sCluster, tmp_path: Path) -> None:
    kubeconfig = cluster.kubeconfig_for_token("not-a-token", "refused")
    result = subprocess.run([CANDOR, "check", f"--kubeconfig={kubeconfig}"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "refused the credentials" in result.stderr
