"""Which policy governs a workload, and restarting Deployments so injected pods follow their policy.

With `rollout: Automatic`, a Deployment that asks for injection gets its pod template annotated with
the hash of what the sidecar would run (policy, config, image), which restarts it the way `kubectl
rollout restart` does with `restartedAt`. The hash makes it idempotent: a resync, a second replica or
an operator restart that finds the same hash does nothing, so pods restart once per real change.
The webhook stamps the same hash on each injected pod, so a Deployment created already annotated
(its pods got the sidecar at admission) is not restarted for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from candor_operator.injection import inject_requested
from candor_operator.kube import KubeClient, path_for
from candor_operator.labels import selector_to_query
from candor_operator.summary import PolicySummary

CONFIG_HASH_ANNOTATION = "candor.io/config-hash"


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
        "selector": dict((body.get("spec") or {}).get("selector") or {}),
        "hash": template_annotations.get(CONFIG_HASH_ANNOTATION),
    }


def wanted_hash(deployment: Mapping[str, Any], policy: PolicySummary | None, sidecar_image: str) -> str | None:
    """The config hash the Deployment's template should carry when it differs from what it has, else None."""
    if policy is None or policy.rollout != "Automatic":
        return None
    wanted = policy.config_hash(sidecar_image)
    return wanted if deployment.get("hash") != wanted else None


def pods_current(pods: Iterable[Mapping[str, Any]], wanted: str) -> bool:
    """Every pod already runs the wanted sidecar config (stamped by the webhook at admission)."""
    return all(((p.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION) == wanted
               for p in pods)


async def ensure_rolled_out(
    client: KubeClient, deployment: Mapping[str, Any], policy: PolicySummary | None, sidecar_image: str
) -> bool:
    """Restart the Deployment when its pods do not run the policy's current sidecar; True when restarted."""
    wanted = wanted_hash(deployment, policy, sidecar_image)
    if wanted is None:
        return False
    namespace, name = str(deployment["namespace"]), str(deployment["name"])
    if deployment.get("hash") is None:
        # Never restarted by Candor: only restart if some pod lacks the sidecar or runs an older config.
        selector = deployment.get("selector") or {}
        if not selector:
            return False
        pods = await client.list_items(path_for("v1", "pods", namespace), label_selector=selector_to_query(selector))
        if pods_current(pods, wanted):
            return False
    await restart(client, namespace, name, wanted)
    return True


async def restart(client: KubeClient, namespace: str, name: str, config_hash: str) -> None:
    # Only the hash, no timestamp: two replicas (or a retry) sending the same patch cause one rollout, not two.
    patch = {"spec": {"template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: config_hash}}}}}
    await client.merge_patch(path_for("apps/v1", "deployments", namespace, name), patch)
