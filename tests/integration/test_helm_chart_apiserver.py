"""The rendered chart, submitted to a real kube-apiserver (server-side dry run): every object is accepted."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import helm, helm_binary
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "candor"


NARROW = ("--set", "networkPolicy.webhook.enabled=true",
          "--set", "networkPolicy.webhook.from[0].ipBlock.cidr=10.0.0.0/24",
          "--set", "networkPolicy.sidecar.enabled=true")


@pytest.mark.parametrize("values", [(), ("--set", "webhook.enabled=false", "--set", "replicaCount=1"), NARROW],
                         ids=["defaults", "no-webhook", "namespaces+network-policies"])
def test_chart_objects_are_accepted_by_the_api_server(
    k8s_cluster: K8sCluster, k8s_namespace: str, values: tuple[str, ...]
) -> None:
    if values == NARROW:  # served namespaces must exist for their Roles: the test's own
        values = (*values, "--set", f"operator.namespaces={{{k8s_namespace}}}",
                  "--set", f"networkPolicy.sidecar.namespaces={{{k8s_namespace}}}")
    rendered = subprocess.run(
        [str(helm_binary()), "template", "candor", str(CHART), "--namespace", k8s_namespace, *values],
        capture_output=True, text=True, timeout=120, check=True).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    # The chart's CRDs are installed for real (as helm does, before the objects of their kinds); the rest is
    # dry-run.
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    k8s_cluster.apply(*crds)
    k8s_cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                        *[f"crd/{o['metadata']['name']}" for o in crds])
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    result = k8s_cluster.kubectl("apply", "--dry-run=server", "-o", "name", "-f", "-", input=document, check=False)
    assert result.returncode == 0, result.stderr
    accepted = set(result.stdout.split())
    assert len(accepted) == len(objects), (sorted(accepted), [o["kind"] for o in objects])
    assert any(name.startswith("mutatingwebhookconfiguration") for name in accepted) == \
        ("webhook.enabled=false" not in values)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    """A control plane of this module's own: helm owns the CRDs it installs, which must not meet those other
    tests applied to the shared one."""
    cluster = K8sCluster(tmp_path_factory.mktemp("k8s-helm"), ensure_binaries()).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_healthpolicies_outlive_helm_uninstall_and_upgrade_still_updates_their_crd(
    own_cluster: K8sCluster, tmp_path: Path
) -> None:
    cluster, release, namespace = own_cluster, "candor", "candor-system"
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/healthpolicies.candor.io"
    # No --wait: without a kubelet the operator's pods never run; the objects are what is looked at.
    helm(cluster.kubeconfig, "install", release, str(CHART), "--namespace", namespace, "--create-namespace")
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/healthpolicies.candor.io")
    assert cluster.api("GET", crd_path).ok()["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    chart = tmp_path / "candor"
    shutil.copytree(CHART, chart)
    crd_file = chart / "files" / "healthpolicy.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["metadata"]["annotations"]["candor.io/upgrade-proof"] = "2"
    crd_file.write_text(yaml.safe_dump(crd))
    helm(cluster.kubeconfig, "upgrade", release, str(chart), "--namespace", namespace)
    assert cluster.api("GET", crd_path).ok()["metadata"]["annotations"]["candor.io/upgrade-proof"] == "2"

    team = cluster.create_namespace()
    cluster.api("POST", f"/apis/candor.io/v1alpha1/namespaces/{team}/healthpolicies", {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": "web"},
        "spec": valid_spec()}).ok()
    helm(cluster.kubeconfig, "uninstall", release, "--namespace", namespace)
    peering_crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusterkopfpeerings.kopf.dev"
    cluster.wait_until(lambda: cluster.api("GET", peering_crd).status == 404, 60, "the peering CRD gone")
    # The team's policy and its CRD are still there (a reinstall, even under another name, finds them).
    assert cluster.api("GET", crd_path).status == 200
    assert cluster.api("GET", f"/apis/candor.io/v1alpha1/namespaces/{team}/healthpolicies/web").status == 200
    helm(cluster.kubeconfig, "install", "candor-again", str(CHART), "--namespace", namespace, "--create-namespace",
         "--take-ownership")
    assert cluster.api("GET", f"/apis/candor.io/v1alpha1/namespaces/{team}/healthpolicies/web").status == 200
    helm(cluster.kubeconfig, "uninstall", "candor-again", "--namespace", namespace)
    # Removing it on purpose, as the README says.
    cluster.kubectl("delete", "crd", "healthpolicies.candor.io", "--wait", "--timeout=60s")
    assert cluster.api("GET", crd_path).status == 404
