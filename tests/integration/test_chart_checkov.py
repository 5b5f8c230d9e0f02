"""An external judge: checkov scans the rendered chart and the injected example pod.

checkov runs from its own cached venv (harness/cluster/checkov.py). Every check it runs either passes
or is skipped in the manifest itself with a one-line reason (`checkov.io/skipN: CKV_K8S_x=reason`),
for the default values and each documented combination; and Candor's injection adds no finding to
the pod it injects (the example's own skips are the demo's, not the sidecar's).
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_operator.injection import PolicyTarget, SidecarSettings, inject
from harness.cluster.checkov import scan
from harness.cluster.helm import helm_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "candor"
MONITORING = ("--api-versions=monitoring.coreos.com/v1", "--api-versions=monitoring.coreos.com/v1/PodMonitor",
              "--api-versions=monitoring.coreos.com/v1/PrometheusRule")
SKIP = re.compile(r"^(CKV2?_K8S_\d+)=(.{10,})$")


def failures(report: dict[str, Any]) -> list[str]:
    return [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in report["results"].get("failed_checks", [])]


@pytest.mark.parametrize("values", [
    (),
    ("--set", "operator.namespaces={shop,blog}", "--set", "networkPolicy.webhook.enabled=true",
     "--set", "networkPolicy.sidecar.enabled=true", "--set", "networkPolicy.sidecar.namespaces={shop}",
     "--set", "uninstall.deletePolicies=true"),
    ("--set", "webhook.certManager.enabled=true", "--api-versions=cert-manager.io/v1", *MONITORING),
], ids=["defaults", "namespaces+network-policies+finalize", "cert-manager+monitoring"])
def test_the_rendered_chart_passes_checkov(values: tuple[str, ...], tmp_path: Path) -> None:
    rendered = subprocess.run([str(helm_binary()), "template", "candor", str(CHART), "--namespace", "candor-system",
                               *values], capture_output=True, text=True, timeout=120, check=True).stdout
    (tmp_path / "chart.yaml").write_text(rendered)
    report = scan(tmp_path)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50
    assert not failures(report), "\n".join(failures(report))
    for document in yaml.safe_load_all(rendered):
        for key, value in ((document or {}).get("metadata", {}).get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                assert SKIP.match(value), f"{document['kind']} {key}: {value!r} (a check id and a reason)"


def example_pod() -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((ROOT / "examples" / "demo-app.yaml").read_text()) if d]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": "resizer-7c9d5-x2x4k", "namespace": "default"},
            "spec": template["spec"]}


def checked(pod: dict[str, Any], directory: Path) -> dict[str, Any]:
    directory.mkdir()
    (directory / "pod.yaml").write_text(yaml.safe_dump(pod))
    return scan(directory)


def test_the_injected_example_pod_passes_checkov_and_the_injection_adds_no_finding(tmp_path: Path) -> None:
    target = PolicyTarget(policy="resizer", configmap="candor-sidecar-resizer")
    injected = inject(example_pod(), target, SidecarSettings())
    report = checked(injected, tmp_path / "injected")
    assert not failures(report), "\n".join(failures(report))
    # Without the example's own skips: whatever checkov finds in the injected pod, it finds in the app alone.
    bare = example_pod()
    bare["metadata"].pop("annotations")
    alone = {f.split()[0] for f in failures(checked(bare, tmp_path / "alone"))}
    with_sidecar = {f.split()[0] for f in failures(checked(inject(copy.deepcopy(bare), target, SidecarSettings()),
                                                           tmp_path / "with-sidecar"))}
    assert with_sidecar <= alone, with_sidecar - alone
