"""Validation of a HealthPolicy spec: `parse_policy(spec)` checks it and returns the typed values.

The rules are those of crds/healthpolicy.yaml (OpenAPI ranges, patterns, enums, defaults and CEL
cross-field rules). The operator applies them again because a CRD may be installed without its
schema, or at an older version, and because `candor render -f` reads files no API server has seen.
Errors name the field the way the API server does (`spec.httpCheck.interval`) and the allowed range.
The typed values themselves live in candor_operator.policy_model; they are re-exported here so
callers can take `parse_policy` and what it returns from one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from candor_operator.policy_model import (
    AgentCheck,
    Deadlock,
    Disk,
    Drain,
    HealthPolicy,
    HttpCheck,
    Ingress,
    LabelRequirement,
    Memory,
    Metrics,
    Passive,
    PolicyError,
    Selector,
)
from candor_sidecar.durations import (
    DURATION_PATTERN,
    NANOS_PER_SECOND,
    DurationError,
    format_duration,
    parse_duration_nanos,
    seconds_to_nanos,
)
from candor_sidecar.shown import show

__all__ = [
    "CONTROLLERS",
    "DEFAULTS",
    "DURATION_PATTERN",
    "DURATION_RANGES",
    "HTTP_PATH_PATTERN",
    "INTEGER_RANGES",
    "OBSERVE_MODES",
    "ON_ERROR_ACTIONS",
    "ROLLOUTS",
    "SELECTOR_OPERATORS",
    "AgentCheck",
    "Deadlock",
    "Disk",
    "Drain",
    "HealthPolicy",
    "HttpCheck",
    "Ingress",
    "LabelRequirement",
    "Memory",
    "Metrics",
    "Passive",
    "PolicyError",
    "Selector",
    "parse_policy",
]

T = TypeVar("T")

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# No spaces, quotes, `#` or `$`: the path lands verbatim in an HAProxy `option httpchk` line.
HTTP_PATH_PATTERN = r"^/[A-Za-z0-9._~!&()*+,;=:@%/?-]*$"
_HTTP_PATH = re.compile(HTTP_PATH_PATTERN)
_ABSOLUTE_PATH = re.compile(r"^/[^\s]*$")

CONTROLLERS = ("haproxytech", "haproxy-ingress")
OBSERVE_MODES = ("layer4", "layer7")
ON_ERROR_ACTIONS = ("fastinter", "fail-check", "sudden-death", "mark-down")
ROLLOUTS = ("Automatic", "Manual")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# (minimum, maximum) per field, in seconds for durations; the CRD carries the same numbers
# (tests/unit/test_policy_crd_agreement.py compares them).
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "httpCheck.port": (1, 65535),
    "httpCheck.rise": (1, 100),
    "httpCheck.fall": (1, 100),
    "httpCheck.expectStatus": (100, 599),
    "agentCheck.port": (1, 65535),
    "memory.maxPercent": (1, 100),
    "disk.maxPercent": (1, 100),
    "maxConn": (1, 100_000),
    "passive.errorLimit": (1, 1000),
}
DURATION_RANGES: dict[str, tuple[float, float]] = {
    "httpCheck.interval": (0.1, 3600.0),
    "httpCheck.timeout": (0.01, 3600.0),
    "agentCheck.interval": (0.1, 3600.0),
    "deadlock.heartbeatTimeout": (1.0, 3600.0),
    "deadlock.maxJobDuration": (1.0, 168 * 3600.0),
    "slowStart": (0.0, 3600.0),
    "queueTimeout": (0.01, 300.0),
    "metrics.finalScrapeTimeout": (1.0, 600.0),
    "drain.maxWait": (1.0, 600.0),
}
DEFAULTS: dict[str, object] = {
    "ingress.controller": "haproxytech",
    "httpCheck.path": "/health",
    "httpCheck.port": 9898,
    "httpCheck.interval": "2s",
    "httpCheck.rise": 2,
    "httpCheck.fall": 3,
    "httpCheck.expectStatus": 200,
    "agentCheck.port": 9999,
    "agentCheck.interval": "2s",
    "memory.maxPercent": 80,
    "disk.maxPercent": 90,
    "deadlock.heartbeatTimeout": "30s",
    "deadlock.maxJobDuration": "10m",
    "slowStart": "30s",
    "passive.errorLimit": 10,
    "passive.onError": "fail-check",
    "metrics.finalScrapeTimeout": "20s",
    "rollout": "Automatic",
    "drain.enabled": True,
}


# --- readers: each takes (value, field path) and names the field when it refuses -------------------


def _section(value: object, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"expected an object with fields {', '.join(allowed)}, got {show(value)}")
    for name in value:
        if name not in allowed:
            raise PolicyError(f"{field}.{name}", f"unknown field; allowed here: {', '.join(allowed)}")
    return value


def _integer(name: str) -> Callable[[object, str], int]:
    low, high = INTEGER_RANGES[name]

    def read(value: object, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PolicyError(field, f"must be an integer from {low} to {high}, got {show(value)}")
        return value

    return read


def _duration(name: str) -> Callable[[object, str], float]:
    low, high = DURATION_RANGES[name]
    allowed = f"between {format_duration(low)} and {format_duration(high)}"

    def read(value: object, field: str) -> float:
        try:
            nanos = parse_duration_nanos(value, field)
        except DurationError as error:
            raise PolicyError(field, error.problem) from None
        if not seconds_to_nanos(low) <= nanos <= seconds_to_nanos(high):
            raise PolicyError(field, f"must be {allowed}, got {value}")
        return nanos / NANOS_PER_SECOND

    return read


def _boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(field, f"must be true or false, got {show(value)}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def read(value: object, field: str) -> str:
        if value not in choices:
            raise PolicyError(field, f"must be one of {', '.join(choices)}, got {show(value)}")
        assert isinstance(value, str)
        return value

    return read


def _http_path(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 1024 or not _HTTP_PATH.match(value):
        raise PolicyError(
            field, f"must be an absolute URL path without spaces, quotes, '#' or '$' (e.g. /health), got {show(value)}"
        )
    return value


def _string_list(
    value: object, field: str, item: Callable[[object, str], str], max_items: int
) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PolicyError(field, f"must be a list, got {show(value)}")
    if len(value) > max_items:
        raise PolicyError(field, f"must have at most {max_items} items, got {len(value)}")
    items = tuple(item(entry, f"{field}[{index}]") for index, entry in enumerate(value))
    for index, entry in enumerate(items):
        if entry in items[:index]:
            raise PolicyError(f"{field}[{index}]", f"duplicate value {entry!r}")
    return items


def _service_name(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _SERVICE_NAME.match(value):
        raise PolicyError(
            field, f"must be a Service name (DNS-1035 label: a-z, 0-9, '-', at most 63), got {show(value)}"
        )
    return value


def _disk_path(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 1024 or not _ABSOLUTE_PATH.match(value):
        raise PolicyError(field, f"must be an absolute path without whitespace, got {show(value)}")
    return value


def _label_key(value: object, field: str) -> str:
    problem = f"must be a label key ([prefix/]name, name at most 63 of A-Z a-z 0-9 - _ .), got {show(value)}"
    if not isinstance(value, str) or not value:
        raise PolicyError(field, problem)
    prefix, _, name = value.rpartition("/")
    if value.count("/") > 1 or not _LABEL_NAME.match(name) or len(name) > 63:
        raise PolicyError(field, problem)
    if "/" in value and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise PolicyError(field, problem)
    return value


def _label_value(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
        raise PolicyError(field, f"must be a label value (at most 63 of A-Z a-z 0-9 - _ .), got {show(value)}")
    return value


def _get(section: Mapping[str, Any], name: str, field: str, read: Callable[[object, str], T], default: T) -> T:
    value = section.get(name)
    return default if value is None else read(value, f"{field}.{name}")


def _default(name: str) -> Any:
    return DEFAULTS[name]


# --- sections --------------------------------------------------------------------------------------


def _selector(value: object, field: str) -> Selector:
    if value is None:
        raise PolicyError(field, "required: a label selector for the pods this policy governs")
    section = _section(value, field, ("matchLabels", "matchExpressions"))
    labels_value = section.get("matchLabels") or {}
    if not isinstance(labels_value, Mapping):
        raise PolicyError(f"{field}.matchLabels", f"must be a map of label keys to values, got {show(labels_value)}")
    if len(labels_value) > 32:
        raise PolicyError(f"{field}.matchLabels", f"must have at most 32 labels, got {len(labels_value)}")
    labels = tuple(
        (_label_key(key, f"{field}.matchLabels"), _label_value(val, f"{field}.matchLabels.{key}"))
        for key, val in labels_value.items()
    )
    expressions_value = section.get("matchExpressions") or []
    if not isinstance(expressions_value, list) or len(expressions_value) > 16:
        raise PolicyError(f"{field}.matchExpressions", "must be a list of at most 16 requirements")
    expressions = tuple(
        _requirement(item, f"{field}.matchExpressions[{index}]") for index, item in enumerate(expressions_value)
    )
    if not labels and not expressions:
        raise PolicyError(field, "must not be empty (an empty selector would govern every pod in the namespace)")
    return Selector(match_labels=labels, match_expressions=expressions)


def _requirement(value: object, field: str) -> LabelRequirement:
    section = _section(value, field, ("key", "operator", "values"))
    if "key" not in section:
        raise PolicyError(f"{field}.key", "required")
    if "operator" not in section:
        raise PolicyError(f"{field}.operator", "required")
    key = _label_key(section["key"], f"{field}.key")
    operator = _choice(SELECTOR_OPERATORS)(section["operator"], f"{field}.operator")
    raw_values = section.get("values")
    values = () if raw_values is None else _string_list(raw_values, f"{field}.values", _label_value, 64)
    if operator in ("In", "NotIn") and not values:
        raise PolicyError(f"{field}.values", f"must be non-empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise PolicyError(f"{field}.values", f"must be empty for operator {operator}")
    return LabelRequirement(key=key, operator=operator, values=values)


def _ingress(value: object, field: str) -> Ingress:
    section = _section(value, field, ("controller", "services"))
    return Ingress(
        controller=_get(section, "controller", field, _choice(CONTROLLERS), _default("ingress.controller")),
        services=_get(section, "services", field, lambda v, f: _string_list(v, f, _service_name, 64), ()),
    )


def _http_check(value: object, field: str) -> HttpCheck:
    section = _section(value, field, ("path", "port", "interval", "timeout", "rise", "fall", "expectStatus"))
    interval_read = _duration("httpCheck.interval")
    check = HttpCheck(
        path=_get(section, "path", field, _http_path, _default("httpCheck.path")),
        port=_get(section, "port", field, _integer("httpCheck.port"), _default("httpCheck.port")),
        interval=_get(section, "interval", field, interval_read, interval_read(_default("httpCheck.interval"), "")),
        timeout=_get(section, "timeout", field, _duration("httpCheck.timeout"), None),
        rise=_get(section, "rise", field, _integer("httpCheck.rise"), _default("httpCheck.rise")),
        fall=_get(section, "fall", field, _integer("httpCheck.fall"), _default("httpCheck.fall")),
        expect_status=_get(
            section, "expectStatus", field, _integer("httpCheck.expectStatus"), _default("httpCheck.expectStatus")
        ),
    )
    if check.timeout is not None and check.timeout > check.interval:
        raise PolicyError(
            f"{field}.timeout",
            f"must not exceed httpCheck.interval ({format_duration(check.interval)}), "
            f"got {format_duration(check.timeout)}",
        )
    return check


def _agent_check(value: object, field: str) -> AgentCheck:
    section = _section(value, field, ("port", "interval"))
    interval_read = _duration("agentCheck.interval")
    return AgentCheck(
        port=_get(section, "port", field, _integer("agentCheck.port"), _default("agentCheck.port")),
        interval=_get(section, "interval", field, interval_read, interval_read(_default("agentCheck.interval"), "")),
    )


def _memory(value: object, field: str) -> Memory:
    section = _section(value, field, ("maxPercent",))
    return Memory(
        max_percent=_get(section, "maxPercent", field, _integer("memory.maxPercent"), _default("memory.maxPercent"))
    )


def _disk(value: object, field: str) -> Disk:
    section = _section(value, field, ("paths", "maxPercent"))
    return Disk(
        paths=_get(section, "paths", field, lambda v, f: _string_list(v, f, _disk_path, 16), ()),
        max_percent=_get(section, "maxPercent", field, _integer("disk.maxPercent"), _default("disk.maxPercent")),
    )


def _deadlock(value: object, field: str) -> Deadlock:
    section = _section(value, field, ("heartbeatTimeout", "maxJobDuration"))
    beat_read = _duration("deadlock.heartbeatTimeout")
    job_read = _duration("deadlock.maxJobDuration")
    deadlock = Deadlock(
        heartbeat_timeout=_get(
            section, "heartbeatTimeout", field, beat_read, beat_read(_default("deadlock.heartbeatTimeout"), "")
        ),
        max_job_duration=_get(
            section, "maxJobDuration", field, job_read, job_read(_default("deadlock.maxJobDuration"), "")
        ),
    )
    if deadlock.max_job_duration < deadlock.heartbeat_timeout:
        raise PolicyError(
            f"{field}.maxJobDuration",
            f"must be at least deadlock.heartbeatTimeout ({format_duration(deadlock.heartbeat_timeout)}), "
            f"got {format_duration(deadlock.max_job_duration)}",
        )
    return deadlock


def _passive(value: object, field: str) -> Passive | None:
    if value is None:
        return None
    section = _section(value, field, ("observe", "errorLimit", "onError"))
    if section.get("observe") is None:
        raise PolicyError(f"{field}.observe", "required when passive is set: one of layer4, layer7")
    return Passive(
        observe=_choice(OBSERVE_MODES)(section["observe"], f"{field}.observe"),
        error_limit=_get(section, "errorLimit", field, _integer("passive.errorLimit"), _default("passive.errorLimit")),
        on_error=_get(section, "onError", field, _choice(ON_ERROR_ACTIONS), _default("passive.onError")),
    )


def _metrics(value: object, field: str) -> Metrics:
    section = _section(value, field, ("finalScrapeTimeout",))
    read = _duration("metrics.finalScrapeTimeout")
    return Metrics(
        final_scrape_timeout=_get(
            section, "finalScrapeTimeout", field, read, read(_default("metrics.finalScrapeTimeout"), "")
        )
    )


def _drain(value: object, field: str) -> Drain:
    section = _section(value, field, ("enabled", "maxWait"))
    return Drain(
        enabled=_get(section, "enabled", field, _boolean, _default("drain.enabled")),
        max_wait=_get(section, "maxWait", field, _duration("drain.maxWait"), None),
    )


_SPEC_FIELDS = (
    "selector", "ingress", "httpCheck", "agentCheck", "memory", "disk", "deadlock", "slowStart", "maxConn",
    "queueTimeout", "passive", "metrics", "rollout", "drain",
)


def parse_policy(spec: object, field: str = "spec") -> HealthPolicy:
    """A validated HealthPolicy from a HealthPolicy's `spec`; raises PolicyError naming the first bad field."""
    if spec is None:
        raise PolicyError(field, "required: a HealthPolicy needs a spec with at least a selector")
    section = _section(spec, field, _SPEC_FIELDS)
    slow_read = _duration("slowStart")
    policy = HealthPolicy(
        selector=_selector(section.get("selector"), f"{field}.selector"),
        ingress=_ingress(section.get("ingress"), f"{field}.ingress"),
        http_check=_http_check(section.get("httpCheck"), f"{field}.httpCheck"),
        agent_check=_agent_check(section.get("agentCheck"), f"{field}.agentCheck"),
        memory=_memory(section.get("memory"), f"{field}.memory"),
        disk=_disk(section.get("disk"), f"{field}.disk"),
        deadlock=_deadlock(section.get("deadlock"), f"{field}.deadlock"),
        slow_start=_get(section, "slowStart", field, slow_read, slow_read(_default("slowStart"), "")),
        max_conn=_get(section, "maxConn", field, _integer("maxConn"), None),
        queue_timeout=_get(section, "queueTimeout", field, _duration("queueTimeout"), None),
        passive=_passive(section.get("passive"), f"{field}.passive"),
        metrics=_metrics(section.get("metrics"), f"{field}.metrics"),
        rollout=_get(section, "rollout", field, _choice(ROLLOUTS), _default("rollout")),
        drain=_drain(section.get("drain"), f"{field}.drain"),
    )
    _check_cross_field(policy, field)
    return policy


def _check_cross_field(policy: HealthPolicy, field: str) -> None:
    """The CRD's CEL rules, in the same words."""
    slow = policy.slow_start
    for name, interval in (("httpCheck", policy.http_check.interval), ("agentCheck", policy.agent_check.interval)):
        if slow and slow < interval:
            raise PolicyError(
                f"{field}.slowStart",
                f"must be 0s (no ramp) or at least {name}.interval ({format_duration(interval)}), "
                f"got {format_duration(slow)}",
            )
    if policy.queue_timeout is not None and policy.max_conn is None:
        raise PolicyError(
            f"{field}.queueTimeout", "needs maxConn (HAProxy only queues requests once a server is at maxConn)"
        )
    max_wait = policy.drain.max_wait
    if max_wait is not None and max_wait < policy.agent_check.interval:
        raise PolicyError(
            f"{field}.drain.maxWait",
            f"must be at least agentCheck.interval ({format_duration(policy.agent_check.interval)}): a shorter "
            f"wait could end before any HAProxy polled again, got {format_duration(max_wait)}",
        )
    if policy.http_check.port == policy.agent_check.port:
        raise PolicyError(
            f"{field}.agentCheck.port",
            f"must differ from httpCheck.port ({policy.http_check.port}): the sidecar serves HTTP and the agent "
            "on separate ports",
        )
