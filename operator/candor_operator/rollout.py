"""Which policy governs a workload, and restarting Deployments so injected pods follow their policy.

With `rollout: Automatic`, a Deployment that asks for injection gets its pod template annotated with
the hash of what the sidecar would run (policy, config, image), exactly like `kubectl rollout
restart` does with `restartedAt`. The hash makes it idempotent: a resync or an operator restart
that finds the same hash does nothing, so pods restart once per real change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from candor_operator.injection import inject_requested
from candor_operator.kube import KubeClient, path_for
from candor_operator.status import now_rfc3339
from candor_operator.summary import PolicySummary

CONFIG_HASH_ANNOTATION = "candor.io/config-hash"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


def governing_policy(labels: Mapping[str, str], policies: Iterable[PolicySummary]) -> PolicySummary | None:
    """The oldest valid policy whose selector matches the pod labels (the same rule as Service claims)."""
    matching = [p for p in policies if p.governs(labels)]
    return min(matching, key=lambda p: p.view.order) if matching else None


def slim_deployment(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """An injection-enabled Deployment as kept in the index; None for Deployments that did not ask."""
    metadata = body.get("metadata") or {}
    template = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
    template_annotations = template.get("annotations") or {}
    if not (inject_requested(metadata.get("annotations")) or inject_requested(template_annotations)):
        return None
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "labels": dict(template.get("labels") or {}),
        "hash": template_annotations.get(CONFIG_HASH_ANNOTATION),
    }


def restart_needed(deployment: Mapping[str, Any], policy: PolicySummary | None, sidecar_image: str) -> str | None:
    """The new config hash when the Deployment must be restarted, else None."""
    if policy is None or policy.rollout != "Automatic":
        return None
    wanted = policy.config_hash(sidecar_image)
    return wanted if deployment.get("hash") != wanted else None


async def restart(client: KubeClient, namespace: str, name: str, config_hash: str) -> None:
    annotations = {CONFIG_HASH_ANNOTATION: config_hash, RESTARTED_AT_ANNOTATION: now_rfc3339()}
    patch = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    await client.merge_patch(path_for("apps/v1", "deployments", namespace, name), patch)
