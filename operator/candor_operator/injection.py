"""The pod mutation that adds the Candor sidecar (pure: pod in, mutated pod out).

The sidecar runs as a native sidecar (an init container with `restartPolicy: Always`, GA since
Kubernetes 1.29/1.33): it starts before the app and, on termination, receives SIGTERM only after
the app containers have exited, so it can fold the journals and serve one last scrape.

The drain before termination rides on preStop hooks, which the kubelet starts together when the pod
is deleted: the sidecar's own hook (`candor sidecar drain`, an exec in the sidecar's image) begins the
drain over a control socket in a volume only the sidecar mounts; each app container's hook is an
`httpGet` of the sidecar's `/drain/wait` (the kubelet dials the pod IP at the numeric port: a named
port would be looked up among the app container's ports), so the app image needs no shell or binary.
The kubelet sends an app SIGTERM when its hook returns, and discards the answer's status.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from candor_operator.api_names import INJECT_ANNOTATION, POLICY_ANNOTATION, STATUS_ANNOTATION
from candor_operator.policy_model import AgentCheck, Drain, Metrics
from candor_sidecar.release import VERSION
from candor_tracer.pod_contract import (
    APP_MEMORY_LIMIT_ENV,
    CONTROL_DIR,
    CONTROL_SOCKET,
    DEFAULT_AGENT_PORT,
    DEFAULT_HTTP_PORT,
    DRAIN_WAIT_PATH,
    LIVENESS_PATH,
    POD_IP_ENV,
    PODINFO_ANNOTATIONS,
    PODINFO_DIR,
    SERVING_PATH,
    STATE_DIR,
    STATE_DIR_ENV,
    TERMINATION_MESSAGE_PATH,
)

INJECTED = "injected"
SKIPPED = "skipped"  # a governed pod the webhook saw and left without a sidecar (it says why in a warning)

SIDECAR_NAME = "candor-sidecar"
STATE_VOLUME = "candor-state"
PODINFO_VOLUME = "candor-podinfo"
CONFIG_VOLUME = "candor-config"
CONTROL_VOLUME = "candor-control"
# The socket named: the hook then loads nothing but the stdlib (see candor_sidecar.drain_hook).
DRAIN_COMMAND = ["candor", "sidecar", "drain", "--control-socket", CONTROL_SOCKET]
CONFIG_DIR = "/etc/candor"
CONFIG_KEY = "sidecar.yaml"

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class SidecarSettings:
    """Operator-wide settings for the injected container (from `candor operator` options / env)."""

    image: str = f"candor-sidecar:{VERSION}"
    image_pull_policy: str = "IfNotPresent"
    run_as_user: int = 10001  # the sidecar image's own user (sidecar/Dockerfile)
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "10m", "memory": "48Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "128Mi"})
    grace_margin_seconds: int = 10


@dataclass(frozen=True)
class PolicyTarget:
    """What the pod needs from the HealthPolicy that governs it."""

    policy: str
    configmap: str
    http_port: int = DEFAULT_HTTP_PORT
    agent_port: int = DEFAULT_AGENT_PORT
    final_scrape_timeout: float = Metrics.final_scrape_timeout
    drain_enabled: bool = Drain.enabled
    drain_max_wait: float = Drain().effective_max_wait(AgentCheck.interval)


def inject_requested(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(INJECT_ANNOTATION, "").strip().lower() == "true"


def already_injected(pod: Mapping[str, Any]) -> bool:
    """Never inject twice: Candor's status annotation marks a pod it injected (or a copy of one)."""
    metadata = pod.get("metadata") or {}
    return (metadata.get("annotations") or {}).get(STATUS_ANNOTATION) == INJECTED


class InjectionConflict(ValueError):
    """The pod already has something under a name or path Candor would add; `problems` name each field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def conflicts(pod: Mapping[str, Any]) -> list[str]:
    """What in an uninjected pod collides with the sidecar, its volumes or the shared journal folder.

    Reusing a user's `candor-state` volume, or injecting beside another volume mounted at the state
    folder, would split the journals between app and sidecar without anyone noticing, so each is a
    reason not to inject, reported to the pod's creator.
    """
    spec = pod.get("spec") or {}
    problems: list[str] = []
    ours = (STATE_VOLUME, PODINFO_VOLUME, CONFIG_VOLUME, CONTROL_VOLUME)
    for index, volume in enumerate(spec.get("volumes") or []):
        if isinstance(volume, Mapping) and volume.get("name") in ours:
            problems.append(f"spec.volumes[{index}]: a volume named {volume['name']} exists already; "
                            "Candor adds its own under that name, rename yours")
    for kind in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(kind) or []):
            if not isinstance(container, Mapping):
                continue
            if container.get("name") == SIDECAR_NAME:
                problems.append(f"spec.{kind}[{index}]: a container named {SIDECAR_NAME} exists already "
                                "but the pod is not marked as injected by Candor")
            for mount_index, mount in enumerate(container.get("volumeMounts") or []):
                if not isinstance(mount, Mapping) or mount.get("name") == STATE_VOLUME:
                    continue
                if str(mount.get("mountPath") or "").rstrip("/") == STATE_DIR:
                    problems.append(
                        f"spec.{kind}[{index}].volumeMounts[{mount_index}]: volume {str(mount.get('name'))[:63]} "
                        f"is mounted at {STATE_DIR}, where the app and the sidecar share journals"
                    )
    return problems


def deployment_name_of(pod: Mapping[str, Any]) -> str | None:
    """The Deployment that owns the pod's ReplicaSet: the RS is named `<deployment>-<pod-template-hash>`."""
    metadata = pod.get("metadata") or {}
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet" and owner.get("controller", True):
            name = str(owner.get("name") or "")
            if template_hash and name.endswith(f"-{template_hash}"):
                return name[: -len(template_hash) - 1]
    return None


def readiness_probe(target: PolicyTarget) -> dict[str, Any]:
    """The sidecar's readinessProbe: a native sidecar's readiness counts for the pod's Ready condition.

    `/health/app` passes once the app accepts connections on every serving port (candor_sidecar.serving),
    and only that: a failing memory or deadlock check, maintenance or a drain are told to HAProxy by the
    agent, which can say drain, maint or down; taking the pod out of the EndpointSlice for them would also
    count it unavailable for rollouts and PodDisruptionBudgets. Probed every second, so a pod is Ready about
    a second after its app listens, and out about two seconds after the app stops accepting connections.
    """
    return {
        "httpGet": {"path": SERVING_PATH, "port": target.http_port},
        "periodSeconds": 1,
        "timeoutSeconds": 1,
        "successThreshold": 1,
        "failureThreshold": 2,
    }


def _sidecar_container(app_container: str, target: PolicyTarget, settings: SidecarSettings,
                       grace: int, app_ports: Sequence[int] = ()) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if settings.requests:
        resources["requests"] = dict(settings.requests)
    if settings.limits:
        resources["limits"] = dict(settings.limits)
    return {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "restartPolicy": "Always",
        "command": [
            "candor", "sidecar",
            "--config", f"{CONFIG_DIR}/{CONFIG_KEY}",
            "--state-dir", STATE_DIR,
            "--http-port", str(target.http_port),
            "--agent-port", str(target.agent_port),
            "--termination-grace-period", str(grace),
            "--control-socket", CONTROL_SOCKET,
            *(word for port in app_ports for word in ("--app-port", str(port))),
        ],
        "ports": [
            {"name": "candor-http", "containerPort": target.http_port, "protocol": "TCP"},
            {"name": "candor-agent", "containerPort": target.agent_port, "protocol": "TCP"},
        ],
        "env": [
            {"name": STATE_DIR_ENV, "value": STATE_DIR},
            {
                "name": APP_MEMORY_LIMIT_ENV,
                "valueFrom": {"resourceFieldRef": {"containerName": app_container, "resource": "limits.memory"}},
            },
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            # Where an app bound to the pod's address only (not 127.0.0.1) is checked (candor_sidecar.serving).
            {"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": STATE_VOLUME, "mountPath": STATE_DIR},
            {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": CONTROL_VOLUME, "mountPath": CONTROL_DIR},
        ],
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": target.http_port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        **({"readinessProbe": readiness_probe(target)} if app_ports else {}),
        # The sidecar leaves each drain's summary here; the kubelet copies the file into the pod's status, where
        # the operator reads it for the pod's Drained Event. The kubelet's defaults, stated so that nothing
        # (a policy of FallbackToLogsOnError would put log lines there) changes them unseen.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        **({"lifecycle": {"preStop": {"exec": {"command": list(DRAIN_COMMAND)}}}} if target.drain_enabled else {}),
    }


def _volumes(target: PolicyTarget) -> list[dict[str, Any]]:
    return [
        {"name": STATE_VOLUME, "emptyDir": {}},
        {
            "name": PODINFO_VOLUME,
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": PODINFO_ANNOTATIONS, "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        },
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": target.configmap, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
        },
        # The control socket's directory: in memory (it holds one socket), in no container but the sidecar.
        {"name": CONTROL_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def _with_app_wiring(container: dict[str, Any]) -> dict[str, Any]:
    """An app container sees the shared journal folder and knows where it is (unless it chose already)."""
    env = list(container.get("env") or [])
    if not any(e.get("name") == STATE_DIR_ENV for e in env):
        env.append({"name": STATE_DIR_ENV, "value": STATE_DIR})
    mounts = list(container.get("volumeMounts") or [])
    if not any(m.get("name") == STATE_VOLUME or m.get("mountPath") == STATE_DIR for m in mounts):
        mounts.append({"name": STATE_VOLUME, "mountPath": STATE_DIR})
    return {**container, "env": env, "volumeMounts": mounts}


def grace_period(current: int | None, target: PolicyTarget, settings: SidecarSettings) -> int:
    """Long enough for the sidecar's final scrape after the app exits (never shortened), plus the drain wait.

    The kubelet counts preStop hooks against the grace period, so the drain's longest wait is added on top:
    the app keeps the time its owner gave it for SIGTERM.
    """
    needed = math.ceil(target.final_scrape_timeout) + settings.grace_margin_seconds
    drain = math.ceil(target.drain_max_wait) if target.drain_enabled else 0
    return max(current if current is not None else 30, needed) + drain


def _drain_hook(container: Mapping[str, Any], target: PolicyTarget) -> tuple[dict[str, Any], str | None]:
    """The container with the drain wait as its preStop hook, and a warning when its own hook stays instead.

    A `sleep` hook composes: the wait then lasts at least that many seconds (`?atLeast=N`). Any other hook
    (exec, httpGet, tcpSocket) is the user's own and stays; the drain still begins at deletion, but that
    container's SIGTERM no longer waits until every HAProxy heard it.
    """
    lifecycle = dict(container.get("lifecycle") or {})
    existing = lifecycle.get("preStop")
    path = DRAIN_WAIT_PATH
    if existing:
        sleep = existing.get("sleep") if isinstance(existing, Mapping) and len(existing) == 1 else None
        seconds = sleep.get("seconds") if isinstance(sleep, Mapping) else None
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
            path += f"?atLeast={seconds}"
        else:
            kind = ", ".join(existing) if isinstance(existing, Mapping) else "unreadable"
            name = str(container.get("name"))[:63]
            return dict(container), (
                f"container {name} keeps its own preStop hook ({kind}): it gets SIGTERM when that hook ends, "
                "not once every HAProxy has heard the drain (the drain still begins at deletion); use a preStop "
                "sleep, or no hook, to have Candor hold its SIGTERM")
    lifecycle["preStop"] = {"httpGet": {"path": path, "port": target.http_port, "scheme": "HTTP"}}
    return {**container, "lifecycle": lifecycle}, None


def drain_warnings(pod: Mapping[str, Any], target: PolicyTarget) -> list[str]:
    """What the injection could not do for the drain (for the pod's admission warnings)."""
    if not target.drain_enabled:
        return []
    containers = (pod.get("spec") or {}).get("containers") or []
    return [warning for c in containers if isinstance(c, Mapping)
            for warning in [_drain_hook(c, target)[1]] if warning is not None]


def skip_reason(pod: Mapping[str, Any]) -> str | None:
    """Why a pod that asks for injection gets no sidecar whatever its policy, or None when it may get one.

    A hostNetwork pod shares the node's network: the sidecar would bind its HTTP and agent ports on the
    node (a second such pod on the node crash-loops on them) and expose the agent and `/drain/wait` to
    everything that reaches the node.
    """
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork") is True:
        return ("spec.hostNetwork: the pod uses the node's network, where the sidecar's ports would be "
                "the node's; Candor does not inject hostNetwork pods")
    return None


def readiness_warnings(pod: Mapping[str, Any], app_ports: Sequence[int]) -> list[str]:
    """App containers without a readinessProbe (for the pod's admission warnings).

    Without one, a container is ready as soon as it runs. The sidecar still holds the pod's Ready until the
    serving ports accept connections, but a port that accepts is not an app that answers (it may still be
    warming up, or connecting to its database); with no serving port known, nothing holds it at all.
    """
    containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, Mapping)]
    serving = [c for c in containers if c.get("ports")] or containers[:1]
    if app_ports:
        ports = ", ".join(str(port) for port in app_ports)
        consequence = (f"the pod is Ready once port(s) {ports} accept connections (the Candor sidecar checks them), "
                       "not once the app answers")
    else:
        consequence = ("no Service of its HealthPolicy selects this pod yet, so nothing holds the pod's Ready until "
                       "its app listens: HAProxy may send requests it refuses")
    return [f"container {str(c.get('name'))[:63]} has no readinessProbe: {consequence}; give it one that asks "
            "the app (see examples/demo-app.yaml)" for c in serving if not c.get("readinessProbe")]


def admission_warnings(pod: Mapping[str, Any], target: PolicyTarget,
                       app_ports: Sequence[int] | None = None) -> list[str]:
    """Everything the creator of an injected pod should hear about its injection, one sentence each.

    The webhook sends them as the pod's admission warnings (prefixed `candor: `); each concern of the
    injection adds its own sentences here, so the webhook has one list to forward. `app_ports`: the pod's
    serving ports as found at admission (candor_operator.app_ports), for the readiness warnings.
    """
    readiness = readiness_warnings(pod, app_ports) if app_ports is not None else []
    return [*drain_warnings(pod, target), *readiness]


def inject(pod: Mapping[str, Any], target: PolicyTarget, settings: SidecarSettings,
           app_ports: Sequence[int] = ()) -> dict[str, Any]:
    """The pod with the sidecar added; ValueError for a pod with no app container, InjectionConflict for collisions.

    `app_ports`: the pod's serving ports (candor_operator.app_ports): the sidecar's readinessProbe waits for them.
    """
    mutated = copy.deepcopy(dict(pod))
    spec = mutated.setdefault("spec", {})
    containers = spec.get("containers") or []
    if not containers:
        raise ValueError("spec.containers: a pod needs at least one app container to inject the sidecar")
    problems = conflicts(mutated)
    if problems:
        raise InjectionConflict(problems)
    app_container = str(containers[0].get("name"))
    grace = grace_period(spec.get("terminationGracePeriodSeconds"), target, settings)
    wired = [_with_app_wiring(c) for c in containers]
    spec["containers"] = [_drain_hook(c, target)[0] for c in wired] if target.drain_enabled else wired
    spec["initContainers"] = [_sidecar_container(app_container, target, settings, grace, app_ports),
                              *(spec.get("initContainers") or [])]
    spec["volumes"] = list(spec.get("volumes") or []) + _volumes(target)
    spec["terminationGracePeriodSeconds"] = grace
    metadata = mutated.setdefault("metadata", {})
    annotations = dict(metadata.get("annotations") or {})
    annotations[STATUS_ANNOTATION] = INJECTED
    annotations[POLICY_ANNOTATION] = target.policy
    metadata["annotations"] = annotations
    return mutated
