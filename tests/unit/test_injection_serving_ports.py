"""A governed pod is not Ready before its app serves: the serving ports found at admission, and the
sidecar's readinessProbe that waits for them."""

from __future__ import annotations

from typing import Any

from candor_operator.app_ports import serving_ports
from candor_operator.injection import PolicyTarget, SidecarSettings, inject, readiness_warnings
from candor_operator.labels import compile_targets
from candor_operator.services import slim_service

TARGET = PolicyTarget(policy="web", configmap="candor-sidecar-web")
SETTINGS = SidecarSettings()
TARGETS = compile_targets({"selector": {"matchLabels": {"app": "web"}}})


def pod(*containers: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "labels": labels or {"app": "web"}},
            "spec": {"containers": list(containers) or [{"name": "app", "image": "shop:1"}]}}


def service(name: str, *ports: dict[str, Any], selector: dict[str, str] | None = None) -> dict[str, Any]:
    return slim_service({"metadata": {"name": name, "namespace": "shop"},
                         "spec": {"selector": selector or {"app": "web"}, "ports": list(ports)}})


APP = {"name": "app", "image": "shop:1", "ports": [{"name": "http", "containerPort": 8080},
                                                   {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}


def test_named_numbered_and_default_target_ports_resolve_for_this_pod() -> None:
    services = [service("web", {"port": 80, "targetPort": "http"}, {"port": 8443},
                        {"port": 9000, "targetPort": 9001}, {"port": 53, "targetPort": 53, "protocol": "UDP"})]
    assert serving_ports(pod(APP), services, TARGETS) == (8080, 8443, 9001)


def test_a_name_no_container_declares_and_services_not_selecting_the_pod_are_skipped() -> None:
    services = [service("web", {"port": 80, "targetPort": "missing"}),
                service("other", {"port": 81, "targetPort": 7000}, selector={"app": "other"})]
    assert serving_ports(pod(APP), services, TARGETS) == ()


def test_only_the_services_the_policy_targets_count() -> None:
    explicit = compile_targets({"selector": {"matchLabels": {"app": "web"}}, "ingress": {"services": ["web"]}})
    services = [service("web", {"port": 80, "targetPort": 8080}), service("admin", {"port": 81, "targetPort": 9090})]
    assert serving_ports(pod(APP), services, explicit) == (8080,)


def test_the_sidecar_checks_the_ports_and_its_readiness_probe_waits_for_them() -> None:
    sidecar = inject(pod(APP), TARGET, SETTINGS, (8080, 9001))["spec"]["initContainers"][0]
    command = sidecar["command"]
    assert [command[i + 1] for i, word in enumerate(command) if word == "--app-port"] == ["8080", "9001"]
    probe = sidecar["readinessProbe"]
    assert probe["httpGet"] == {"path": "/health/app", "port": 9898}
    assert probe["periodSeconds"] == 1
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_without_a_serving_port_the_sidecar_gets_no_readiness_probe() -> None:
    # A probe on a check that does not exist would keep the pod unready forever.
    sidecar = inject(pod(APP), TARGET, SETTINGS)["spec"]["initContainers"][0]
    assert "readinessProbe" not in sidecar and "--app-port" not in sidecar["command"]


def test_app_containers_without_a_readiness_probe_are_named_in_a_warning() -> None:
    probed = {**APP, "name": "api", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}
    logs = {"name": "logs", "image": "shipper:1"}  # serves nothing: not warned about
    [warning] = readiness_warnings(pod(APP, probed, logs), (8080,))
    assert warning.startswith("container app has no readinessProbe") and "8080" in warning
    assert readiness_warnings(pod(probed), (8080,)) == []
    [unknown] = readiness_warnings(pod({"name": "solo", "image": "x:1"}), ())
    assert "no Service of its HealthPolicy selects this pod" in unknown
