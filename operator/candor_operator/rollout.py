"""Which policy governs a workload, and restarting Deployments so injected pods follow their policy.

With `rollout: Automatic`, a Deployment that asks for injection gets its pod template annotated with
the hash of what the sidecar would run (policy, config, image), which restarts it the way `kubectl
rollout restart` does with `restartedAt`. The hash makes it idempotent: a resync, a second replica or
an operator restart that finds the same hash does nothing, so pods restart once per real change.
The webhook stamps the same hash on each injected pod, so a Deployment created already annotated
(its pods got the sidecar at admission) is not restarted for nothing.

A template that already carries the hash does not prove its pods have the sidecar: pods made while
the operator was down, or its webhook unreachable, were admitted as they were (`failurePolicy:
Ignore`). So the pods made from the current template are looked at too, and a Deployment with pods
the webhook never saw is restarted once more with `candor.io/heal` set to a digest of those pods: the
same pods give the same patch, so a replayed event or a second replica adds no rollout. If the
webhook stays unreachable the new pods miss it too; `HealPacer` then spaces the next restarts of
that Deployment out (one minute, doubling up to an hour) instead of rolling it continuously.

A Deployment whose pods run a sidecar of another release or image (a `helm upgrade` changed it) is not
restarted at once but queued: `advance_upgrades` restarts those one at a time (sidecar_upgrade.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from candor_operator.api_names import CONFIG_HASH_ANNOTATION, HEAL_ANNOTATION, INJECT_LABEL, STATUS_ANNOTATION
from candor_operator.injection import inject_requested
from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.labels import selector_to_query
from candor_operator.operator_indices import namespace_slice
from candor_operator.pod_census import on_old_sidecar
from candor_operator.sidecar_upgrade import UpgradeQueue, rollout_fields
from candor_operator.summary import PolicySummary

logger = logging.getLogger("candor.operator")
UPGRADE_REASON = "SidecarUpgraded"  # the Event on a Deployment restarted onto a new sidecar



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
        "uid": metadata.get("uid"),
        "labels": dict(template.get("labels") or {}),
        "selector": dict((body.get("spec") or {}).get("selector") or {}),
        "hash": template_annotations.get(CONFIG_HASH_ANNOTATION),
        "heal": template_annotations.get(HEAL_ANNOTATION),
        "min_ready": (body.get("spec") or {}).get("minReadySeconds") or 0,
        "resource_version": metadata.get("resourceVersion"),
        "rollout": rollout_fields(body),
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


def from_current_template(pod: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    """Made from the Deployment's template as it is now (pods copy the template's annotations), not being deleted."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return (not metadata.get("deletionTimestamp")
            and annotations.get(CONFIG_HASH_ANNOTATION) == deployment.get("hash")
            and annotations.get(HEAL_ANNOTATION) == deployment.get("heal"))


def missed_pods(pods: Iterable[Mapping[str, Any]], deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Pods of the current template that the webhook never saw: they carry no `candor.io/status` at all.

    The webhook marks every governed pod it answers, `injected` or `skipped` (a name colliding with
    Candor's, hostNetwork, no app container: it would be skipped again, so restarting for it would only
    churn). Only pod metadata is needed, so pods are read as metadata only.
    """
    return [pod for pod in pods
            if from_current_template(pod, deployment)
            and STATUS_ANNOTATION not in ((pod.get("metadata") or {}).get("annotations") or {})]


def heal_mark(pods: Iterable[Mapping[str, Any]]) -> str:
    uids = sorted(str((pod.get("metadata") or {}).get("uid")) for pod in pods)
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:16]


class HealPacer:
    """When a Deployment may be restarted again for pods that missed the webhook.

    The first heal is at once; another within `first` seconds means the webhook missed the new pods
    too, so the wait doubles up to `maximum`, and a look that finds the current pods injected resets it.
    """

    def __init__(self, first: float = 60.0, maximum: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first, self.maximum = first, maximum
        self._clock = clock
        self._next: dict[tuple[str, str], tuple[float, float, str]] = {}  # key -> (not before, next wait, mark)

    def allowed(self, key: tuple[str, str]) -> bool:
        not_before, _, _ = self._next.get(key, (0.0, self.first, ""))
        return self._clock() >= not_before

    def last_mark(self, key: tuple[str, str]) -> str | None:
        """The heal mark last sent for this Deployment (None when it has settled since)."""
        entry = self._next.get(key)
        return entry[2] if entry is not None else None

    def healed(self, key: tuple[str, str], mark: str) -> None:
        _, wait, _ = self._next.get(key, (0.0, self.first, ""))
        self._next[key] = (self._clock() + wait, min(self.maximum, wait * 2), mark)

    def settled(self, key: tuple[str, str]) -> None:
        self._next.pop(key, None)


async def ensure_rolled_out(
    client: KubeClient, deployment: Mapping[str, Any], policy: PolicySummary | None, sidecar_image: str,
    heals: HealPacer, upgrades: UpgradeQueue,
) -> str | None:
    """Restart the Deployment when its pods do not run the policy's current sidecar; says why when it did.

    Pods on a sidecar of another release or image put it in `upgrades` instead, restarted in turn.
    """
    namespace, name = str(deployment["namespace"]), str(deployment["name"])
    key = (namespace, name)
    if policy is None or policy.rollout != "Automatic":
        upgrades.forget(key)
        return None
    selector = deployment.get("selector") or {}
    wanted = wanted_hash(deployment, policy, sidecar_image)
    if wanted is not None:
        pods = await _pods(client, namespace, selector) if selector else []
        # Never restarted by Candor: only restart if some pod lacks the sidecar or runs an older config.
        if deployment.get("hash") is None and (not selector or pods_current(pods, wanted)):
            return None
        if any(on_old_sidecar(pod, image=sidecar_image) for pod in pods
               if not (pod.get("metadata") or {}).get("deletionTimestamp")):
            upgrades.wait(key)
            return None
        upgrades.forget(key)
        await restart(client, namespace, name, {CONFIG_HASH_ANNOTATION: wanted})
        return "to get the current sidecar config"
    upgrades.forget(key)
    if not selector:
        return None
    pods = await _pods(client, namespace, selector)
    missed = missed_pods(pods, deployment)
    if not missed:
        if any(from_current_template(pod, deployment) for pod in pods):
            heals.settled(key)
        return None
    mark = heal_mark(missed)
    if heals.last_mark(key) == mark:
        return None  # the pods this process already restarted for: an event from before its patch
    if not heals.allowed(key):
        logger.warning("Deployment %s/%s: %d pods of its current template missed the injection webhook again; "
                       "is the webhook reachable from the API server?", namespace, name, len(missed))
        return None
    heals.healed(key, mark)
    await restart(client, namespace, name, {HEAL_ANNOTATION: mark})
    return f"for {len(missed)} pods that missed the injection webhook"


async def _pods(client: KubeClient, namespace: str, selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    return await client.list_metadata(path_for("v1", "pods", namespace), label_selector=selector_to_query(selector))


async def restart(client: KubeClient, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
    # Only values derived from the state, no timestamp: two replicas (or a retry) sending the same patch cause
    # one rollout, not two.
    # The label that lets the new pods through the webhook's matchConditions (governed.py) rides along.
    patch = {"spec": {"template": {"metadata": {"annotations": dict(annotations),
                                                "labels": {INJECT_LABEL: "true"}}}}}
    await client.merge_patch(path_for("apps/v1", "deployments", namespace, name), patch)


async def advance_upgrades(
    client: KubeClient, upgrades: UpgradeQueue, deployments: Any, policies: Any, sidecar_image: str
) -> tuple[Mapping[str, Any], PolicySummary] | None:
    """Restart the next Deployment waiting for the current sidecar, unless a rollout is still under way.

    `deployments` and `policies`: kopf's whole indices (every namespace). Returns what it restarted.
    """
    if not upgrades.waiting:
        return None  # the common case, on every Deployment event: nothing to look at
    async with upgrades.lock:
        governed: list[tuple[Mapping[str, Any], str | None, PolicySummary | None]] = []
        for namespace in list(deployments) if deployments is not None else []:
            in_namespace = namespace_slice(policies, namespace)
            for deployment in namespace_slice(deployments, namespace):
                policy = governing_policy(deployment.get("labels") or {}, in_namespace)
                automatic = policy is not None and policy.rollout == "Automatic"
                wanted = policy.config_hash(sidecar_image) if automatic and policy is not None else None
                governed.append((deployment, wanted, policy))
        chosen = upgrades.choose((deployment, wanted) for deployment, wanted, _ in governed)
        if chosen is None:
            return None
        _, wanted, policy = next(entry for entry in governed if entry[0] is chosen)
        assert wanted is not None and policy is not None  # choose() only picks Deployments an Automatic policy governs
        namespace, name = str(chosen["namespace"]), str(chosen["name"])
        try:
            await restart(client, namespace, name, {CONFIG_HASH_ANNOTATION: wanted})
        except ApiError as error:
            if error.status != 404:
                raise
            upgrades.forget((namespace, name))  # deleted meanwhile
            return None
        upgrades.restarted((namespace, name), wanted)
        return chosen, policy
