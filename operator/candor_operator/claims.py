"""Who owns a Service's Candor annotations when several HealthPolicies target it.

Deterministic so every replica, restart and order of events agrees: among the valid policies that
target a Service, the oldest (creationTimestamp, then name) wins; the others report Conflict. An
invalid policy never writes, but it also never loses what it already owns: a typo must not strip
health checks from a live Service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from candor_operator.labels import TargetMatcher, compile_targets
from candor_operator.ownership import record_of


@dataclass(frozen=True)
class PolicyView:
    """What the claim decision needs from one HealthPolicy."""

    name: str
    created: str  # RFC 3339 creationTimestamp: same format everywhere, so strings sort by time
    spec: Mapping[str, Any]
    annotations: Mapping[str, str] | None  # rendered; None when the policy is invalid
    deleting: bool = False

    @cached_property
    def matcher(self) -> TargetMatcher:
        return compile_targets(self.spec)

    @property
    def order(self) -> tuple[str, str]:
        return (self.created, self.name)

    @property
    def valid(self) -> bool:
        return self.annotations is not None


@dataclass(frozen=True)
class Decision:
    """The outcome for one Service: `owner` and its annotations, or a release (owner None), or no change."""

    owner: str | None
    desired: Mapping[str, str] | None
    untouched: bool = False


def targets(policy: PolicyView, service: Mapping[str, Any]) -> bool:
    """An unusable selector targets nothing: that is the policy's own Invalid condition, not a claim."""
    return not policy.deleting and policy.matcher.matches(service)


def decide(service: Mapping[str, Any], policies: Sequence[PolicyView]) -> Decision:
    candidates = [p for p in policies if targets(p, service)]
    current_owner = record_of((service.get("metadata") or {}).get("annotations")).policy
    for policy in candidates:
        if policy.name == current_owner and not policy.valid:
            return Decision(owner=current_owner, desired=None, untouched=True)
    valid = [p for p in candidates if p.valid]
    if not valid:
        return Decision(owner=None, desired=None)
    winner = min(valid, key=lambda p: p.order)
    return Decision(owner=winner.name, desired=winner.annotations)
