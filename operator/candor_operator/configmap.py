"""The sidecar-config ConfigMap of a policy: created, updated in place, deleted with the policy."""

from __future__ import annotations

from typing import Any

from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.summary import PolicySummary, configmap_body, configmap_name


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    meta, wanted_meta = current.get("metadata") or {}, wanted["metadata"]
    labels = meta.get("labels") or {}
    return (
        current.get("data") != wanted["data"]
        or any(labels.get(k) != v for k, v in wanted_meta["labels"].items())
        or meta.get("ownerReferences") != wanted_meta["ownerReferences"]
    )


async def apply_configmap(client: KubeClient, summary: PolicySummary) -> bool:
    """Create or update; True when something was written."""
    wanted = configmap_body(summary)
    collection = path_for("v1", "configmaps", summary.namespace)
    path = path_for("v1", "configmaps", summary.namespace, summary.configmap)
    for _ in range(4):
        current = await client.get_or_none(path)
        if current is None:
            try:
                await client.create(collection, wanted)
                return True
            except ApiError as error:
                if error.status != 409:  # created meanwhile (another replica, a retry): update it instead
                    raise
                continue
        if not _differs(current, wanted):
            return False
        patch = {
            "metadata": {
                "resourceVersion": current["metadata"].get("resourceVersion"),
                "labels": wanted["metadata"]["labels"],
                "ownerReferences": wanted["metadata"]["ownerReferences"],
            },
            "data": wanted["data"],
        }
        try:
            await client.merge_patch(path, patch)
            return True
        except ApiError as error:
            if error.status not in (404, 409):
                raise
    raise RuntimeError(f"ConfigMap {summary.namespace}/{summary.configmap} kept changing; retrying later")


async def delete_configmap(client: KubeClient, namespace: str, policy: str, uid: str) -> None:
    """Delete only if this policy (this uid) owns it; the garbage collector would do it too, later."""
    path = path_for("v1", "configmaps", namespace, configmap_name(policy))
    current = await client.get_or_none(path)
    if current is None:
        return
    owners = (current.get("metadata") or {}).get("ownerReferences") or []
    if any(owner.get("uid") == uid for owner in owners):
        await client.delete(path)
