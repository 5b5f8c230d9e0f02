"""Reconcile one HealthPolicy: validate, render, write the ConfigMap and Service annotations, report status.

Idempotent by construction: every step compares what is there with what should be and writes only
the difference, so running it again after a crash, on resume, on a resync timer or on two replicas
converges to the same state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from candor_operator import status as conditions
from candor_operator.claims import Decision, PolicyView, targets
from candor_operator.configmap import apply_configmap, delete_configmap
from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.ownership import record_of
from candor_operator.pod_census import PodCensus, census
from candor_operator.ready_window import ensure_min_ready
from candor_operator.rollout import HealPacer, ensure_rolled_out, governing_policy
from candor_operator.services import reconcile_service, slim_service
from candor_operator.sidecar_upgrade import UpgradeQueue
from candor_operator.summary import PolicySummary
from candor_sidecar.field_error import FieldError

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    pods: PodCensus | None = None  # the governed pods, when they could be counted

    @property
    def result(self) -> str:
        """ready, conflict or invalid: the condition that is True (for the reconcile metrics)."""
        true = {c.get("type") for c in self.status.get("conditions") or [] if c.get("status") == "True"}
        for result, kind in (("invalid", conditions.INVALID), ("conflict", conditions.CONFLICT)):
            if kind in true:
                return result
        return "ready"


def _views(policies: Sequence[PolicySummary], me: PolicySummary) -> list[PolicyView]:
    """The namespace's policies, with this one as freshly read (the index may lag a little behind)."""
    others = [p.view for p in policies if p.uid != me.uid and p.name != me.name]
    return [*others, me.view]


def _owned_by(service: Mapping[str, Any], name: str) -> bool:
    return record_of((service.get("metadata") or {}).get("annotations")).policy == name


async def count_pods(client: KubeClient, summary: PolicySummary, sidecar_image: str | None = None) -> PodCensus | None:
    selector = summary.spec.get("selector")
    if not isinstance(selector, Mapping):
        return None
    try:
        return await census(client, summary.namespace, selector, image=sidecar_image or None)
    except (ApiError, FieldError) as error:
        logger.warning("cannot count the pods of %s/%s: %s", summary.namespace, summary.name, error)
        return None


async def reconcile_policy(
    client: KubeClient,
    summary: PolicySummary,
    previous_status: Mapping[str, Any],
    services: Sequence[Mapping[str, Any]],
    policies: Sequence[PolicySummary],
    deployments: Sequence[Mapping[str, Any]] = (),
    sidecar_image: str = "",
    *,
    heals: HealPacer,
    upgrades: UpgradeQueue,
) -> Outcome:
    previous_conditions = previous_status.get("conditions")
    if not summary.valid:
        field_name, problem = summary.error_field or "spec", summary.error_problem or "invalid"
        merged = conditions.merge_conditions(
            previous_conditions, conditions.invalid(field_name, problem), summary.generation
        )
        events = [] if _was_invalid(previous_conditions, field_name, problem) else [
            ("Warning", "Invalid", f"{field_name}: {problem}; nothing was written")
        ]
        return Outcome({"observedGeneration": summary.generation, "conditions": merged}, events)

    events = []
    changes: list[str] = []  # one "Reconciled" Event per reconcile that changed something, not one per object
    if await apply_configmap(client, summary):
        changes.append(f"sidecar config written to ConfigMap {summary.configmap}")

    views = _views(policies, summary)
    owned: list[str] = []
    lost: dict[str, str] = {}
    for service in services:
        name = str((service.get("metadata") or {}).get("name"))
        if not (targets(summary.view, service) or _owned_by(service, summary.name)):
            continue
        before = record_of((service.get("metadata") or {}).get("annotations")).policy
        written: list[Decision] = []
        decision = await reconcile_service(client, service, views, on_write=written.append)
        if decision is None:
            continue
        if decision.owner == summary.name:
            owned.append(name)
            if written:
                changes.append(f"Service {name} annotated" if before != summary.name
                               else f"Service {name} annotations repaired (they had been changed)")
        elif targets(summary.view, service):
            lost[name] = decision.owner or "(an invalid policy)"
        elif before == summary.name and written:
            changes.append(f"Service {name} released (no longer targeted; Candor's annotations removed)")

    for deployment in deployments:
        labels = deployment.get("labels") or {}
        if governing_policy(labels, [*[p for p in policies if p.uid != summary.uid], summary]) is not summary:
            continue
        if await ensure_min_ready(client, deployment, summary.min_ready_seconds):
            changes.append(f"Deployment {deployment['name']} minReadySeconds raised to {summary.min_ready_seconds}")
        why = await ensure_rolled_out(client, deployment, summary, sidecar_image, heals, upgrades)
        if why:
            changes.append(f"Deployment {deployment['name']} restarted {why}")

    if changes:
        events.insert(0, ("Normal", "Reconciled", "; ".join(changes)))
    owned.sort()
    if lost:
        new_conditions = conditions.conflict(owned, lost, summary.configmap)
        for service_name, owner in sorted(lost.items()):
            if not _was_conflict(previous_conditions):
                events.append(("Warning", "Conflict", f"Service {service_name} is owned by older HealthPolicy {owner}"))
    else:
        new_conditions = conditions.ready(owned, summary.configmap)
    status: dict[str, Any] = {
        "observedGeneration": summary.generation,
        "services": len(owned),
        "serviceNames": owned,
        "configMap": summary.configmap,
        "conditions": conditions.merge_conditions(previous_conditions, new_conditions, summary.generation),
    }
    pods = await count_pods(client, summary, sidecar_image)
    if pods is not None:
        status.update(pods.as_status())
    return Outcome(status, events, pods)


def _condition(previous: object, kind: str) -> Mapping[str, Any] | None:
    for condition in previous if isinstance(previous, list) else []:
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def _was_invalid(previous: object, field_name: str, problem: str) -> bool:
    condition = _condition(previous, conditions.INVALID)
    if not condition or condition.get("status") != "True":
        return False
    return f"{field_name}: {problem}" in str(condition.get("message", ""))


def _was_conflict(previous: object) -> bool:
    condition = _condition(previous, conditions.CONFLICT)
    return bool(condition and condition.get("status") == "True")


async def release_policy(
    client: KubeClient, summary: PolicySummary, policies: Sequence[PolicySummary]
) -> list[str]:
    """On deletion: hand each owned Service to the next policy in line or remove exactly what Candor wrote.

    Lists the Services fresh from the API server: deletion may follow creation within milliseconds,
    before the watch-fed index has seen the annotations written a moment ago.
    """
    me = PolicyView(summary.name, summary.created, summary.spec, summary.annotations, deleting=True)
    views = [p.view for p in policies if p.uid != summary.uid and p.name != summary.name] + [me]
    released: list[str] = []
    for service in await client.list_items(path_for("v1", "services", summary.namespace)):
        if _owned_by(service, summary.name):
            await reconcile_service(client, slim_service(service), views)
            released.append(str(service["metadata"]["name"]))
    await delete_configmap(client, summary.namespace, summary.name, summary.uid)
    return released
