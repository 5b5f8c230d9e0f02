"""`candor render -f`: prints annotations and backend; a bad file exits 2 naming the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from candor_cli.group import group as main

POLICY = """\
apiVersion: candor.io/v1alpha1
kind: HealthPolicy
metadata: {name: demo, namespace: shop}
spec:
  selector: {matchLabels: {app: demo}}
  maxConn: 30
  queueTimeout: 5s
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: demo}
spec: {selector: {app: demo}, ports: [{port: 80}]}
"""


def _run(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["render", "-f", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_text_output_has_annotations_and_backend(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, POLICY)
    assert code == 0
    assert "haproxy.org/pod-maxconn: '30'" in out
    assert "backend shop_demo" in out and "option httpchk GET /health" in out
    assert "# Note: haproxy.org/pod-maxconn is divided by the number of haproxytech controller pods" in out


def test_haproxy_ingress_text_output_has_no_division_note(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, POLICY, "--controller", "haproxy-ingress")
    assert code == 0
    assert "maxconn-server: '30'" in out and "# Note:" not in out and "balance random(2)" in out


def test_annotations_output_is_yaml_with_literal_snippets(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, POLICY, "-o", "annotations", "--controller", "haproxy-ingress")
    assert code == 0
    annotations = yaml.safe_load(out)["metadata"]["annotations"]
    assert annotations["haproxy-ingress.github.io/timeout-queue"] == "5s"
    assert annotations["haproxy-ingress.github.io/config-backend"].startswith("http-check expect status 200\n")
    assert "config-backend: |" in out


def test_other_documents_are_skipped_and_every_policy_rendered(tmp_path: Path) -> None:
    second = POLICY.replace("name: demo,", "name: other,")
    code, out, _ = _run(tmp_path, f"{SERVICE}---\n{POLICY}---\n{second}", "-o", "backend")
    assert code == 0
    assert "backend shop_demo" in out and "backend shop_other" in out


def test_sidecar_output(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, POLICY, "-o", "sidecar")
    assert code == 0 and yaml.safe_load(out)["maxConn"] == 30


def test_invalid_field_exits_2_naming_it(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, POLICY.replace("maxConn: 30", "maxConn: 0"))
    assert code == 2 and out == ""
    assert "shop/demo: spec.maxConn: must be an integer from 1 to 100000" in err


def test_queue_timeout_without_max_conn_exits_2(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, POLICY.replace("  maxConn: 30\n", ""))
    assert code == 2 and "spec.queueTimeout: needs maxConn" in err


def test_no_policy_in_file(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, SERVICE)
    assert code == 2 and "no HealthPolicy" in err


def test_wrong_api_version(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, POLICY.replace("v1alpha1", "v9"))
    assert code == 2 and "apiVersion: must be candor.io/v1alpha1" in err


def test_broken_yaml(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, "kind: [HealthPolicy\n")
    assert code == 2 and "not valid YAML" in err


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", "-f", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "cannot read" in result.stderr


def test_unknown_controller_option_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, POLICY, "--controller", "nginx")
    assert code == 2 and "haproxytech" in err


def test_text_and_sidecar_outputs_say_what_the_weight_follows(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, POLICY)
    assert code == 0 and "# Agent weight: ramps over slowStart 30s; load weights off (agentCheck.weight)" in out
    weighted = POLICY + "  agentCheck: {weight: {from: [occupancy], targetPercent: 60}}\n"
    code, out, _ = _run(tmp_path, weighted)
    assert code == 0
    assert ("# Agent weight: ramps over slowStart 30s, times a load factor from occupancy: full up to 60% load, "
            "down to 10% at saturation, moved by 10 points or more") in out
    code, out, _ = _run(tmp_path, weighted, "-o", "sidecar")
    assert code == 0
    assert yaml.safe_load(out)["loadWeight"] == {"from": ["occupancy"], "targetPercent": 60, "minPercent": 10,
                                                 "stepPercent": 10}
