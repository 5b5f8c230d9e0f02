"""Validation of a HealthPolicy spec: `parse_policy(spec)` checks it and returns the typed values.

The rules are the ones candor_operator.policy_model declares, the same declaration the CRD's schema
and CEL rules are generated from (candor_operator.crd). The operator applies them again because a CRD
may be installed without its schema, or at an older version, and because `candor render -f` reads
files no API server has seen. Errors name the field the way the API server does
(`spec.httpCheck.interval`) and the allowed range. The typed values are re-exported here so callers
can take `parse_policy` and what it returns from one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from candor_operator.policy_fields import (
    LABEL_KEY_LENGTHS_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_MAX_LENGTH,
    LABEL_VALUE_PATTERN,
    Boolean,
    Choice,
    ChoiceList,
    Compare,
    Duration,
    Integer,
    Kind,
    LabelSelector,
    Needs,
    Section,
    Spec,
    Text,
    TextList,
    declared,
    leaves,
    lookup,
)
from candor_operator.policy_model import (
    AgentCheck,
    Cpu,
    Deadlock,
    Disk,
    Drain,
    HealthPolicy,
    HttpCheck,
    Ingress,
    LabelRequirement,
    LoadWeight,
    Memory,
    Metrics,
    Passive,
    Selector,
)
from candor_sidecar.durations import (
    NANOS_PER_SECOND,
    format_duration,
    parse_duration_nanos,
)
from candor_sidecar.field_error import FieldError
from candor_sidecar.shown import show

__all__ = [
    "CONTROLLERS",
    "DEFAULTS",
    "AgentCheck",
    "Cpu",
    "Deadlock",
    "Disk",
    "Drain",
    "HealthPolicy",
    "HttpCheck",
    "Ingress",
    "LabelRequirement",
    "LoadWeight",
    "Memory",
    "Metrics",
    "Passive",
    "Selector",
    "parse_policy",
]


def _choices(dotted: str) -> tuple[str, ...]:
    kind = lookup(HealthPolicy, dotted).spec.kind
    assert isinstance(kind, Choice)
    return kind.values


CONTROLLERS = _choices("ingress.controller")
# What the API server fills in, per dotted spec path (the CRD's `default`s).
DEFAULTS: dict[str, object] = {dotted: spec.default for dotted, spec in leaves(HealthPolicy)
                               if spec.default is not None}


def _matches(pattern: str, value: str) -> bool:
    # fullmatch, not match: `$` also matches before a final newline, which would let "/health\n" into an
    # HAProxy config line; the API server's RE2 refuses it too.
    return re.fullmatch(pattern, value) is not None


# --- one reader per kind: each takes (value, field path) and names the field when it refuses ------


def _read(kind: Kind, value: object, field: str) -> Any:
    if isinstance(kind, Integer):
        if isinstance(value, bool) or not isinstance(value, int) or not kind.minimum <= value <= kind.maximum:
            raise FieldError(field, f"must be an integer from {kind.minimum} to {kind.maximum}, got {show(value)}")
        return value
    if isinstance(kind, Duration):
        return _duration(kind, value, field)
    if isinstance(kind, Text):
        return _text(kind, value, field)
    if isinstance(kind, Choice):
        if value not in kind.values:
            raise FieldError(field, f"must be one of {', '.join(kind.values)}, got {show(value)}")
        return value
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise FieldError(field, f"must be true or false, got {show(value)}")
        return value
    if isinstance(kind, TextList):
        return _unique_list(value, field, kind.max_items, lambda item, where: _text(kind.item, item, where))
    if isinstance(kind, ChoiceList):
        one = Choice(kind.values)
        items = _unique_list(value, field, len(kind.values), lambda item, where: _read(one, item, where))
        if not items:
            raise FieldError(field, f"must name at least one of {', '.join(kind.values)}")
        return items
    if isinstance(kind, Section):
        return _section(kind.model, value, field)
    return _selector(kind, value, field)


def _duration(kind: Duration, value: object, field: str) -> float:
    nanos = parse_duration_nanos(value, field)
    if not parse_duration_nanos(kind.minimum, field) <= nanos <= parse_duration_nanos(kind.maximum, field):
        raise FieldError(field, f"must be between {kind.minimum} and {kind.maximum}, got {value}")
    return nanos / NANOS_PER_SECOND


def _text(kind: Text, value: object, field: str) -> str:
    if not isinstance(value, str) or not kind.min_length <= len(value) <= kind.max_length \
            or not _matches(kind.pattern, value):
        raise FieldError(field, f"must be {kind.shape}, got {show(value)}")
    return value


def _unique_list(value: object, field: str, max_items: int, item: Callable[[object, str], str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise FieldError(field, f"must be a list, got {show(value)}")
    if len(value) > max_items:
        raise FieldError(field, f"must have at most {max_items} items, got {len(value)}")
    items = tuple(item(entry, f"{field}[{index}]") for index, entry in enumerate(value))
    for index, entry in enumerate(items):
        if entry in items[:index]:
            raise FieldError(f"{field}[{index}]", f"duplicate value {entry!r}")
    return items


def _required(spec: Spec) -> str:
    if isinstance(spec.kind, Choice):
        return f"one of {', '.join(spec.kind.values)}"
    return "a label selector for the pods this policy governs"


def _section(model: type[Any], value: object, field: str) -> Any:
    """An object of `model` from a mapping: its declared fields read, absent or null ones defaulted."""
    fields = declared(model)
    allowed = tuple(item.name for item in fields)
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise FieldError(field, f"expected an object with fields {', '.join(allowed)}, got {show(value)}")
    for name in value:
        if name not in allowed:
            raise FieldError(f"{field}.{name}", f"unknown field; allowed here: {', '.join(allowed)}")
    values: dict[str, Any] = {}
    for item in fields:
        where, given = f"{field}.{item.name}", value.get(item.name)
        if given is not None:
            values[item.attribute] = _read(item.spec.kind, given, where)
        elif item.spec.required:
            raise FieldError(where, f"required: {_required(item.spec)}")
    return model(**values)


# --- the label selector: Kubernetes' grammar, Candor's limits ------------------------------------


def _label_key(value: object, field: str) -> str:
    if not isinstance(value, str) or not _matches(LABEL_KEY_PATTERN, value) \
            or not _matches(LABEL_KEY_LENGTHS_PATTERN, value):
        raise FieldError(
            field, f"must be a label key ([prefix/]name, name at most 63 of A-Z a-z 0-9 - _ .), got {show(value)}")
    return value


def _label_value(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > LABEL_VALUE_MAX_LENGTH or not _matches(LABEL_VALUE_PATTERN, value):
        raise FieldError(field, f"must be a label value (at most 63 of A-Z a-z 0-9 - _ .), got {show(value)}")
    return value


def _selector(kind: LabelSelector, value: object, field: str) -> Selector:
    if not isinstance(value, Mapping):
        raise FieldError(field, f"expected an object with fields matchLabels, matchExpressions, got {show(value)}")
    for name in value:
        if name not in ("matchLabels", "matchExpressions"):
            raise FieldError(f"{field}.{name}", "unknown field; allowed here: matchLabels, matchExpressions")
    labels_value = value.get("matchLabels") or {}
    if not isinstance(labels_value, Mapping):
        raise FieldError(f"{field}.matchLabels", f"must be a map of label keys to values, got {show(labels_value)}")
    if len(labels_value) > kind.max_labels:
        raise FieldError(f"{field}.matchLabels",
                         f"must have at most {kind.max_labels} labels, got {len(labels_value)}")
    labels = tuple(
        (_label_key(key, f"{field}.matchLabels"), _label_value(val, f"{field}.matchLabels.{key}"))
        for key, val in labels_value.items()
    )
    expressions_value = value.get("matchExpressions") or []
    if not isinstance(expressions_value, list) or len(expressions_value) > kind.max_expressions:
        raise FieldError(f"{field}.matchExpressions", f"must be a list of at most {kind.max_expressions} requirements")
    expressions = tuple(
        _requirement(kind, item, f"{field}.matchExpressions[{index}]") for index, item in enumerate(expressions_value)
    )
    if not labels and not expressions:
        raise FieldError(field, "must not be empty (an empty selector would govern every pod in the namespace)")
    return Selector(match_labels=labels, match_expressions=expressions)


def _requirement(kind: LabelSelector, value: object, field: str) -> LabelRequirement:
    if not isinstance(value, Mapping):
        raise FieldError(field, f"expected an object with fields key, operator, values, got {show(value)}")
    for name in value:
        if name not in ("key", "operator", "values"):
            raise FieldError(f"{field}.{name}", "unknown field; allowed here: key, operator, values")
    if "key" not in value:
        raise FieldError(f"{field}.key", "required")
    if "operator" not in value:
        raise FieldError(f"{field}.operator", "required")
    key = _label_key(value["key"], f"{field}.key")
    operator = _read(Choice(kind.operators), value["operator"], f"{field}.operator")
    raw_values = value.get("values")
    values = () if raw_values is None else _unique_list(raw_values, f"{field}.values", kind.max_values, _label_value)
    if operator in ("In", "NotIn") and not values:
        raise FieldError(f"{field}.values", f"must be non-empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise FieldError(f"{field}.values", f"must be empty for operator {operator}")
    return LabelRequirement(key=key, operator=operator, values=values)


# --- the policy ------------------------------------------------------------------------------------


def parse_policy(spec: object, field: str = "spec") -> HealthPolicy:
    """A validated HealthPolicy from a HealthPolicy's `spec`; raises FieldError naming the first bad field."""
    if spec is None:
        raise FieldError(field, "required: a HealthPolicy needs a spec with at least a selector")
    policy = _section(HealthPolicy, spec, field)
    assert isinstance(policy, HealthPolicy)
    for rule in HealthPolicy.RULES:
        _check_rule(rule, policy, field)
    return policy


def _value(policy: HealthPolicy, dotted: str) -> Any:
    """The typed value at a dotted spec path; None when it, or a section on the way, is unset."""
    node: Any = policy
    model: type[Any] = HealthPolicy
    for name in dotted.split("."):
        item = lookup(model, name)
        node = getattr(node, item.attribute)
        if node is None:
            return None
        if isinstance(item.spec.kind, Section):
            model = item.spec.kind.model
    return node


def _shown(dotted: str, value: Any) -> str:
    return format_duration(value) if isinstance(lookup(HealthPolicy, dotted).spec.kind, Duration) else str(value)


def _check_rule(rule: Compare | Needs, policy: HealthPolicy, field: str) -> None:
    """A cross-field rule of the CRD, in the same words, with the values."""
    value, other = _value(policy, rule.field), _value(policy, rule.other)
    why = f" ({rule.why})" if rule.why else ""
    if isinstance(rule, Needs):
        if value is not None and other is None:
            raise FieldError(f"{field}.{rule.field}", rule.requirement + why)
        return
    if value is None or other is None or (rule.zero_means and value == 0):
        return
    if not {">=": value >= other, "<=": value <= other, "!=": value != other}[rule.relation]:
        raise FieldError(
            f"{field}.{rule.field}",
            f"{rule.requirement} ({_shown(rule.other, other)}){why}, got {_shown(rule.field, value)}",
        )
