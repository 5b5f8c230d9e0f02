"""The rendered chart, submitted to a real kube-apiserver (server-side dry run): every object is accepted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.helm import helm_binary
from tests.support.k8s_cluster import K8sCluster

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
