"""Label-selector matching, and which Services a HealthPolicy targets.

The API server evaluates selectors for list calls, but the operator must also decide for Services it
already holds (from a list or a watch event), so the Kubernetes rules are implemented here once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from candor_sidecar.field_error import FieldError

_SET_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


def _as_label_selector(selector: Mapping[str, Any]) -> tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]:
    """(matchLabels, matchExpressions) of a LabelSelector; a plain map of labels means matchLabels."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        return selector.get("matchLabels") or {}, selector.get("matchExpressions") or []
    return selector, []


def selector_is_empty(selector: Mapping[str, Any] | None) -> bool:
    """An empty selector matches everything in Kubernetes; a policy must never mean that by accident."""
    if not selector:
        return True
    labels, expressions = _as_label_selector(selector)
    return not labels and not expressions


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str], field: str = "spec.selector") -> bool:
    """True when `labels` satisfy the LabelSelector (matchLabels AND every matchExpression)."""
    match_labels, expressions = _as_label_selector(selector)
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    for index, expression in enumerate(expressions):
        where = f"{field}.matchExpressions[{index}]"
        expression_key = expression.get("key")
        operator = expression.get("operator")
        values = list(expression.get("values") or [])
        if not isinstance(expression_key, str) or not expression_key:
            raise FieldError(f"{where}.key", "must be a non-empty label key")
        key = expression_key
        if operator not in _SET_OPERATORS:
            raise FieldError(f"{where}.operator", f"{operator!r} is not one of {sorted(_SET_OPERATORS)}")
        if operator in ("In", "NotIn") and not values:
            raise FieldError(f"{where}.values", f"must not be empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise FieldError(f"{where}.values", f"must be empty for operator {operator}")
        if not expression_holds(labels, key, operator, values):
            return False
    return True


def expression_holds(labels: Mapping[str, str], key: str, operator: str, values: Collection[str]) -> bool:
    """One validated matchExpressions entry against a label set, as the API server evaluates it."""
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not (present and labels[key] in values)
    if operator == "Exists":
        return present
    return not present  # DoesNotExist


def explicit_services(spec: Mapping[str, Any]) -> list[str] | None:
    """`spec.ingress.services` when given (names in the policy's namespace), else None."""
    ingress = spec.get("ingress") or {}
    services = ingress.get("services") if isinstance(ingress, Mapping) else None
    if not services:
        return None
    return [str(name) for name in services]


@dataclass(frozen=True)
class TargetMatcher:
    """A policy's Service targeting, compiled once (it runs for every Service event against every policy)."""

    names: frozenset[str] | None  # explicit spec.ingress.services
    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()
    usable: bool = True  # False: an empty or unusable selector never targets anything implicitly

    def matches(self, service: Mapping[str, Any]) -> bool:
        if self.names is not None:
            return (service.get("metadata") or {}).get("name") in self.names
        if not self.usable:
            return False
        labels = (service.get("spec") or {}).get("selector")
        if not labels:
            return False
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        return all(expression_holds(labels, key, operator, values) for key, operator, values in self.expressions)


def compile_targets(spec: Mapping[str, Any]) -> TargetMatcher:
    """Explicit `ingress.services` win; else every pod a Service selects must be governed by the policy
    (the policy selector matches the Service's selector labels). Services without a selector (external
    endpoints) are never targeted implicitly."""
    names = explicit_services(spec)
    if names is not None:
        return TargetMatcher(frozenset(names))
    selector = spec.get("selector")
    if not isinstance(selector, Mapping) or selector_is_empty(selector):
        return TargetMatcher(None, usable=False)
    try:
        selector_matches(selector, {})  # validates the expressions once
    except FieldError:
        return TargetMatcher(None, usable=False)
    match_labels, expressions = _as_label_selector(selector)
    return TargetMatcher(
        None,
        tuple((str(k), str(v)) for k, v in match_labels.items()),
        tuple((str(e["key"]), str(e["operator"]), frozenset(str(v) for v in e.get("values") or []))
              for e in expressions),
    )


def policy_targets_service(spec: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    """Does the policy (raw spec) govern this Service? See compile_targets."""
    return compile_targets(spec).matches(service)


def selector_to_query(selector: Mapping[str, Any]) -> str:
    """The `labelSelector=` query form of a LabelSelector (for server-side filtered lists)."""
    match_labels, expressions = _as_label_selector(selector)
    parts = [f"{key}={value}" for key, value in sorted(match_labels.items())]
    for expression in expressions:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(sorted(str(v) for v in expression.get("values") or []))
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
