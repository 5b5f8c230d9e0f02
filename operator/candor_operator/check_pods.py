"""What `candor check` says about one governed pod: why it has no sidecar, and what its agent answers.

Pure functions of the objects read from the API server, so each explanation is unit-tested apart
from a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from candor_operator.api_names import INJECT_ANNOTATION
from candor_operator.injection import conflicts, deployment_name_of, inject_requested


def _created(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def why_not_injected(
    pod: Mapping[str, Any],
    policy: Mapping[str, Any],
    deployments: Mapping[str, Mapping[str, Any]],
    webhook_created: str | None,
) -> str:
    """One sentence: why this governed pod runs without the sidecar, and what to do about it.

    `deployments` maps names to the namespace's Deployments; `webhook_created` is when the injection
    webhook was configured (None: it is not). Timestamps are RFC 3339 in UTC, so they compare as text.
    """
    metadata = pod.get("metadata") or {}
    created = _created(pod)
    deployment = deployment_name_of(pod)
    owner = deployments.get(deployment) if deployment else None
    asked = inject_requested(metadata.get("annotations")) or (
        owner is not None and inject_requested((owner.get("metadata") or {}).get("annotations")))
    restart = (f"; then `kubectl rollout restart deployment/{deployment}`" if deployment
               else "; then recreate the pod")
    if not asked:
        where = f"Deployment {deployment}" if deployment else "the pod"
        return f"not opted in: annotate {where} with {INJECT_ANNOTATION}: \"true\"" + restart
    if webhook_created is None:
        return "no injection webhook is configured (install the chart with webhook.enabled=true)"
    if created and created < webhook_created:
        return f"created at {created}, before the injection webhook existed ({webhook_created})" + restart
    policy_created = _created(policy)
    if created and policy_created and created < policy_created:
        name = (policy.get("metadata") or {}).get("name")
        return f"created at {created}, before HealthPolicy {name} ({policy_created}) governed it" + restart
    problems = conflicts(pod)
    if problems:
        return "its spec collides with what Candor adds: " + "; ".join(problems)
    if (pod.get("spec") or {}).get("hostNetwork"):
        return "it uses hostNetwork: the sidecar's ports would be the node's, so Candor leaves it alone"
    return (f"the webhook did not inject it when it was created ({created or 'unknown time'}): it was unreachable "
            "or failed then, and failurePolicy Ignore admitted the pod without the sidecar" + restart)


def agent_answer(status: int, body: str) -> tuple[str, str]:
    """(up|down|drain|maint|unknown, why) from the sidecar's /health answer (application/health+json)."""
    try:
        document = json.loads(body)
    except ValueError:
        return "unknown", f"/health answered HTTP {status} with no health document"
    if not isinstance(document, dict):
        return "unknown", f"/health answered HTTP {status} with no health document"
    notes = [str(note) for note in document.get("notes") or []]
    for word in ("maint", "drain"):
        reasons = [note for note in notes if f"answers {word}" in note]
        if reasons:
            return word, "; ".join(reasons)
    if document.get("status") == "fail":
        return "down", str(document.get("output") or "a check fails")
    return "up", str(document.get("output") or "every check passes")
