"""examples/, kind-config.yaml and the Dockerfiles say what the README promises."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from candor_operator.labels import selector_matches
from candor_operator.policy import parse_policy
from candor_operator.render import render_annotations

ROOT = Path(__file__).resolve().parents[2]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for path in sorted((ROOT / "examples").glob("*.yaml")) for doc in _documents(path)
            if doc["kind"] == kind]


def test_example_policy_is_valid_and_governs_the_demo() -> None:
    (document,) = _by_kind("HealthPolicy")
    policy = parse_policy(document["spec"])
    (deployment,) = _by_kind("Deployment")
    (service,) = _by_kind("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy.selector.as_label_selector(), pod_labels)
    assert selector_matches(service["spec"]["selector"], pod_labels)
    assert policy.ingress.services == (service["metadata"]["name"],)
    assert {d["metadata"]["namespace"] for d in (document, deployment, service)} == {"default"}
    assert render_annotations(policy)


def test_demo_deployment_asks_for_injection() -> None:
    (deployment,) = _by_kind("Deployment")
    assert deployment["metadata"]["annotations"]["candor.io/inject"] == "true"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"]  # the memory check needs a limit to compare with
    # Ready once the app answers, on the port the Service targets (what a user should copy).
    probe = container["readinessProbe"]["httpGet"]
    (service,) = _by_kind("Service")
    assert probe["port"] == service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_demo_manifests_validate_strictly() -> None:
    validate = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(validate), "--strict", "-k", "1.33.0", str(ROOT / "examples" / "demo-app.yaml")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kind_config_has_ingress_ready_control_plane_and_two_workers() -> None:
    (config,) = _documents(ROOT / "kind-config.yaml")
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    control = config["nodes"][0]
    assert 'node-labels: "ingress-ready=true"' in control["kubeadmConfigPatches"][0]
    assert {(m["containerPort"], m["hostPort"]) for m in control["extraPortMappings"]} == {(80, 80), (443, 443)}
    for node in config["nodes"]:
        match = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", node["image"])
        assert match and int(match.group(1)) >= 33, node["image"]


def test_dockerfiles_run_the_distribution_as_non_root_on_python_311() -> None:
    for path, command in ((ROOT / "operator" / "Dockerfile", "operator"), (ROOT / "sidecar" / "Dockerfile", "sidecar")):
        text = path.read_text()
        assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["python:3.11-slim", "python:3.11-slim"]
        user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
        assert user and not user[-1].startswith(("0", "root")), path
        assert re.search(r"pip install .*candor", text), path
        assert f'CMD ["{command}"' in text and 'ENTRYPOINT ["candor"]' in text


def test_dockerfiles_build_both_distributions_from_their_folders() -> None:
    """The build context holds tracer/ (candor-tracer) and every folder of the candor distribution; the
    image cache of the tests keys on the same COPY lines (harness/cluster/images.py)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {"tracer", *project["tool"]["setuptools"]["packages"]["find"]["where"]}
    for path in (ROOT / "operator" / "Dockerfile", ROOT / "sidecar" / "Dockerfile"):
        text = path.read_text()
        copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
        assert folders <= copied, (path, sorted(folders - copied))
        assert re.search(r"^RUN pip wheel .* \./tracer ", text, re.MULTILINE), path
