"""The pod mutation the injection webhook applies (pure builder; the API-server path is in integration)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from candor_operator import injection
from candor_operator.injection import PolicyTarget, SidecarSettings, inject
from candor_operator.webhook import url, webhook_configuration
from candor_sidecar.config import parse_config
from candor_tracer.pod_contract import CONTROL_SOCKET

TARGET = PolicyTarget(policy="web", configmap="candor-sidecar-web", http_port=9898, agent_port=9999,
                      final_scrape_timeout=45.0)
SETTINGS = SidecarSettings(image="registry.local/candor-sidecar:1.2.3")


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "generateName": "web-5d8f7c9b4-",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
            "annotations": {"team": "payments"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4",
                                 "uid": "u1", "controller": True}],
        },
        "spec": {
            "containers": [
                {"name": "app", "image": "shop:1", "resources": {"limits": {"memory": "512Mi"}}},
                {"name": "worker", "image": "shop:1", "env": [{"name": "MODE", "value": "worker"}]},
            ],
            "terminationGracePeriodSeconds": 30,
            **spec,
        },
    }


def test_sidecar_is_the_first_init_container_with_native_sidecar_semantics() -> None:
    mutated = inject(pod(initContainers=[{"name": "migrate", "image": "shop:1"}]), TARGET, SETTINGS)
    inits = mutated["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["candor-sidecar", "migrate"]
    sidecar = inits[0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "registry.local/candor-sidecar:1.2.3"
    assert "--config" in sidecar["command"] and "/etc/candor/sidecar.yaml" in sidecar["command"]
    assert {p["containerPort"] for p in sidecar["ports"]} == {9898, 9999}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 9898}
    assert sidecar["resources"]["limits"]["memory"] == "128Mi"


def test_every_app_container_gets_the_state_dir_and_the_shared_volume() -> None:
    mutated = inject(pod(), TARGET, SETTINGS)
    for container in mutated["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CANDOR_STATE_DIR"] == "/var/run/candor"
        assert {"name": "candor-state", "mountPath": "/var/run/candor"} in container["volumeMounts"]
    worker_env = mutated["spec"]["containers"][1]["env"]
    assert {"name": "MODE", "value": "worker"} in worker_env  # the app's own env is kept


def test_memory_limit_comes_from_the_downward_api_of_the_first_app_container() -> None:
    sidecar = inject(pod(), TARGET, SETTINGS)["spec"]["initContainers"][0]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["CANDOR_APP_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": "app", "resource": "limits.memory"}


def test_volumes_state_podinfo_and_policy_configmap() -> None:
    volumes = {v["name"]: v for v in inject(pod(), TARGET, SETTINGS)["spec"]["volumes"]}
    assert volumes["candor-state"] == {"name": "candor-state", "emptyDir": {}}
    items = {i["path"]: i["fieldRef"]["fieldPath"] for i in volumes["candor-podinfo"]["downwardAPI"]["items"]}
    assert items == {"labels": "metadata.labels", "annotations": "metadata.annotations"}
    assert volumes["candor-config"]["configMap"]["name"] == "candor-sidecar-web"
    sidecar = inject(pod(), TARGET, SETTINGS)["spec"]["initContainers"][0]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["candor-podinfo"]["mountPath"] == "/etc/podinfo" and mounts["candor-podinfo"]["readOnly"]
    assert mounts["candor-config"]["readOnly"]


def test_security_context_is_restricted() -> None:
    context = inject(pod(), TARGET, SETTINGS)["spec"]["initContainers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(("current", "expected"), [(30, 55 + 7), (120, 120 + 7), (None, 55 + 7)])
def test_grace_period_covers_the_final_scrape_and_the_drain_wait_and_is_never_shortened(
        current: int | None, expected: int) -> None:
    spec = {} if current is None else {"terminationGracePeriodSeconds": current}
    body = pod(**spec)
    if current is None:
        del body["spec"]["terminationGracePeriodSeconds"]
    mutated = inject(body, TARGET, SETTINGS)
    assert mutated["spec"]["terminationGracePeriodSeconds"] == expected
    command = mutated["spec"]["initContainers"][0]["command"]
    assert command[command.index("--termination-grace-period") + 1] == str(expected)  # the sidecar knows it
    undrained = inject(body, replace(TARGET, drain_enabled=False), SETTINGS)
    assert undrained["spec"]["terminationGracePeriodSeconds"] == expected - 7


def test_the_sidecar_begins_the_drain_in_its_own_prestop_hook_over_a_socket_only_it_mounts() -> None:
    mutated = inject(pod(), TARGET, SETTINGS)
    sidecar = mutated["spec"]["initContainers"][0]
    assert sidecar["lifecycle"] == {"preStop": {"exec": {"command": ["candor", "sidecar", "drain",
                                                                     "--control-socket", CONTROL_SOCKET]}}}
    command = sidecar["command"]
    assert command[command.index("--control-socket") + 1] == "/run/candor-control/sidecar.sock"
    assert {"name": "candor-control", "mountPath": "/run/candor-control"} in sidecar["volumeMounts"]
    volumes = {v["name"]: v for v in mutated["spec"]["volumes"]}
    assert volumes["candor-control"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    for container in mutated["spec"]["containers"]:  # no app container can reach the control socket
        assert all(m["name"] != "candor-control" for m in container["volumeMounts"])


def test_the_sidecar_leaves_its_drain_summary_where_the_kubelet_reads_it_as_a_file() -> None:
    sidecar = inject(pod(), TARGET, SETTINGS)["spec"]["initContainers"][0]
    assert sidecar["terminationMessagePath"] == parse_config({}).termination_message_path == "/dev/termination-log"
    assert sidecar["terminationMessagePolicy"] == "File"  # never log lines in place of the summary


def test_the_prestop_drain_reaches_the_socket_the_injected_sidecar_opens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from candor_sidecar.cli import parser
    from candor_sidecar.drain_hook import _default_socket
    from candor_sidecar.drain_hook import parser as drain_parser

    monkeypatch.delenv("CANDOR_CONTROL_SOCKET", raising=False)  # as in the pod: the injection sets no such env
    sidecar = inject(pod(), TARGET, SETTINGS)["spec"]["initContainers"][0]
    hook = sidecar["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[:3] == ["candor", "sidecar", "drain"]
    drain_socket = drain_parser("candor sidecar").parse_args(hook[3:]).control_socket
    assert parser("candor sidecar").parse_args(sidecar["command"][2:]).control_socket == drain_socket
    # Run by hand in the container, without the flag, it finds the same socket.
    assert _default_socket() == drain_socket


def test_every_app_container_waits_for_the_drain_in_an_http_prestop_hook() -> None:
    mutated = inject(pod(), TARGET, SETTINGS)
    for container in mutated["spec"]["containers"]:
        # a number, not the port's name: the kubelet resolves names among the app container's own ports
        assert container["lifecycle"] == {
            "preStop": {"httpGet": {"path": "/drain/wait", "port": 9898, "scheme": "HTTP"}}}
    assert injection.drain_warnings(pod(), TARGET) == []


def test_a_prestop_sleep_is_composed_and_other_hooks_are_kept_with_a_warning() -> None:
    body = pod()
    app, worker = body["spec"]["containers"]
    app["lifecycle"] = {"preStop": {"sleep": {"seconds": 15}}, "postStart": {"exec": {"command": ["warm"]}}}
    worker["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "flush"]}}}
    mutated = inject(body, TARGET, SETTINGS)
    app_after, worker_after = mutated["spec"]["containers"]
    assert app_after["lifecycle"] == {
        "preStop": {"httpGet": {"path": "/drain/wait?atLeast=15", "port": 9898, "scheme": "HTTP"}},
        "postStart": {"exec": {"command": ["warm"]}}}
    assert worker_after["lifecycle"] == worker["lifecycle"]  # the user's own hook stays
    (warning,) = injection.drain_warnings(body, TARGET)
    assert warning.startswith("container worker keeps its own preStop hook (exec): it gets SIGTERM when")


def test_a_policy_without_drain_adds_no_hooks() -> None:
    body = pod()
    body["spec"]["containers"][1]["lifecycle"] = {"preStop": {"exec": {"command": ["flush"]}}}
    mutated = inject(body, replace(TARGET, drain_enabled=False), SETTINGS)
    assert "lifecycle" not in mutated["spec"]["initContainers"][0]
    assert "lifecycle" not in mutated["spec"]["containers"][0]
    assert injection.drain_warnings(body, replace(TARGET, drain_enabled=False)) == []


def test_marks_the_pod_and_never_injects_twice() -> None:
    original = pod()
    mutated = inject(original, TARGET, SETTINGS)
    assert mutated["metadata"]["annotations"] == {"team": "payments", "candor.io/status": "injected",
                                                  "candor.io/policy": "web"}
    assert injection.already_injected(mutated)
    assert not injection.already_injected(original)
    assert original == pod()  # the input is not mutated
    by_name_only = copy.deepcopy(original)
    by_name_only["spec"]["initContainers"] = [{"name": "candor-sidecar", "image": "x"}]
    assert not injection.already_injected(by_name_only)
    with pytest.raises(injection.InjectionConflict, match=r"spec\.initContainers\[0\]: a container named candor"):
        inject(by_name_only, TARGET, SETTINGS)


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s.setdefault("volumes", []).append({"name": "candor-state", "emptyDir": {}}), r"spec\.volumes\[0\]"),
    (lambda s: s.setdefault("volumes", []).append({"name": "candor-config", "emptyDir": {}}), r"spec\.volumes\[0\]"),
    (lambda s: s.setdefault("volumes", []).append({"name": "candor-podinfo", "emptyDir": {}}), r"spec\.volumes\[0\]"),
    (lambda s: s.setdefault("volumes", []).append({"name": "candor-control", "emptyDir": {}}), r"spec\.volumes\[0\]"),
    (lambda s: s["containers"][0].setdefault("volumeMounts", []).append(
        {"name": "journals", "mountPath": "/var/run/candor/"}), r"spec\.containers\[0\]\.volumeMounts\[0\]"),
    (lambda s: s["containers"].append({"name": "candor-sidecar", "image": "x"}), r"spec\.containers\[2\]"),
])
def test_a_collision_with_candors_names_is_refused_naming_the_field(change: Any, field: str) -> None:
    body = pod()
    change(body["spec"])
    with pytest.raises(injection.InjectionConflict, match=field):
        inject(body, TARGET, SETTINGS)


def test_an_app_that_already_sets_the_state_dir_keeps_its_choice() -> None:
    body = pod()
    body["spec"]["containers"][0]["env"] = [{"name": "CANDOR_STATE_DIR", "value": "/journal"}]
    env = inject(body, TARGET, SETTINGS)["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "CANDOR_STATE_DIR"] == [{"name": "CANDOR_STATE_DIR", "value": "/journal"}]


def test_a_pod_without_containers_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match=r"spec\.containers"):
        inject({"metadata": {}, "spec": {"containers": []}}, TARGET, SETTINGS)


def test_the_deployment_is_the_replicaset_name_minus_the_template_hash() -> None:
    assert injection.deployment_name_of(pod()) == "web"
    orphan = pod()
    orphan["metadata"]["ownerReferences"] = []
    assert injection.deployment_name_of(orphan) is None
    job_pod = pod()
    job_pod["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "web-5d8f7c9b4", "controller": True}]
    assert injection.deployment_name_of(job_pod) is None


@pytest.mark.parametrize(("value", "wanted"), [("true", True), ("True", True), (" true ", True), ("false", False),
                                               ("yes", False), (None, False)])
def test_inject_annotation_is_an_explicit_true(value: str | None, wanted: bool) -> None:
    annotations = {} if value is None else {"candor.io/inject": value}
    assert injection.inject_requested(annotations) is wanted


def test_webhook_configuration_is_safe_for_the_cluster() -> None:
    config = webhook_configuration({"url": url("https://127.0.0.1:9443"), "caBundle": "Q0E="})
    hook = config["webhooks"][0]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/candor/inject"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["rules"][0]["operations"] == ["CREATE"] and hook["rules"][0]["resources"] == ["pods"]
    excluded = hook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn"
    assert {"kube-system", "kube-public", "kube-node-lease"} <= set(excluded["values"])


def test_a_hostnetwork_pod_is_skipped_with_a_reason_naming_the_field() -> None:
    assert injection.skip_reason(pod()) is None
    assert injection.skip_reason(pod(hostNetwork=False)) is None
    reason = injection.skip_reason(pod(hostNetwork=True))
    assert reason is not None and reason.startswith("spec.hostNetwork: ")


def test_admission_warnings_collect_every_concern_of_the_injection() -> None:
    body = pod()
    body["spec"]["containers"][1]["lifecycle"] = {"preStop": {"exec": {"command": ["flush"]}}}
    assert injection.admission_warnings(body, TARGET) == injection.drain_warnings(body, TARGET)
    assert injection.admission_warnings(pod(), TARGET) == []
