"""`status.conditions` of a HealthPolicy: Ready, Invalid, Conflict (Kubernetes condition conventions).

lastTransitionTime only moves when a condition's status flips, so a resync that changes nothing
produces an identical status and therefore no write.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

READY, INVALID, CONFLICT = "Ready", "Invalid", "Conflict"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    conditions: Sequence[Condition],
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    before = {str(c.get("type")): c for c in previous or [] if isinstance(c, Mapping)}
    merged: list[dict[str, Any]] = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        old = before.get(condition.type)
        if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
            since = str(old["lastTransitionTime"])
        else:
            since = now or now_rfc3339()
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def ready(services: Sequence[str], configmap: str) -> list[Condition]:
    listed = ", ".join(services) if services else "no Service matches yet"
    return [
        Condition(READY, True, "Reconciled", f"annotations on: {listed}; sidecar config in ConfigMap {configmap}"),
        Condition(INVALID, False, "Valid", "the policy passed validation"),
        Condition(CONFLICT, False, "NoConflict", "no other HealthPolicy owns a targeted Service"),
    ]


def invalid(field: str, problem: str) -> list[Condition]:
    message = f"{field}: {problem}; nothing was written"
    return [
        Condition(READY, False, "Invalid", message),
        Condition(INVALID, True, "ValidationFailed", message),
        Condition(CONFLICT, False, "NoConflict", "not evaluated: the policy is invalid"),
    ]


def conflict(owned: Sequence[str], lost: Mapping[str, str], configmap: str) -> list[Condition]:
    """`lost` maps a Service name to the older policy that owns it."""
    details = "; ".join(f"Service {svc} is owned by HealthPolicy {owner}" for svc, owner in sorted(lost.items()))
    message = f"{details} (the older policy wins; this one is newer)"
    ready_message = f"annotations on: {', '.join(owned)}" if owned else "no Service is owned by this policy"
    return [
        Condition(READY, False, "Conflict", f"{ready_message}; {message}; sidecar config in ConfigMap {configmap}"),
        Condition(INVALID, False, "Valid", "the policy passed validation"),
        Condition(CONFLICT, True, "ServiceOwnedByOlderPolicy", message),
    ]
