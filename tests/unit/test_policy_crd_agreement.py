"""crds/healthpolicy.yaml and candor_operator.policy state the same rules: ranges, defaults, enums, patterns, fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_operator import policy as model
from candor_sidecar.durations import format_duration, parse_duration
from tests.support.policy_cases import FULL_SPEC

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "healthpolicy.yaml"


@pytest.fixture(scope="module")
def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def _node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def _leaf_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, child in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        if child.get("type") == "object" and "properties" in child and name != "selector":
            paths |= _leaf_paths(child, dotted + ".")
        else:
            paths.add(dotted)
    return paths


def _spec_paths(spec: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, value in spec.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict) and name != "selector":
            paths |= _spec_paths(value, dotted + ".")
        else:
            paths.add(dotted)
    return paths


def test_integer_ranges_match(spec_schema: dict[str, Any]) -> None:
    for dotted, (low, high) in model.INTEGER_RANGES.items():
        node = _node(spec_schema, dotted)
        assert (node["type"], node["minimum"], node["maximum"]) == ("integer", low, high), dotted


def test_duration_ranges_match_the_cel_rules(spec_schema: dict[str, Any]) -> None:
    for dotted, (low, high) in model.DURATION_RANGES.items():
        node = _node(spec_schema, dotted)
        assert node["pattern"] == model.DURATION_PATTERN, dotted
        rule = node["x-kubernetes-validations"][0]
        assert f"between {format_duration(low)} and {format_duration(high)}" in rule["message"], dotted
        bounds = re.findall(r"duration\('([^']+)'\)", rule["rule"])
        assert [parse_duration(b, dotted) for b in bounds] == ([low, high] if low else [high]), dotted


def test_defaults_match(spec_schema: dict[str, Any]) -> None:
    for dotted, default in model.DEFAULTS.items():
        assert _node(spec_schema, dotted)["default"] == default, dotted


def test_enums_match(spec_schema: dict[str, Any]) -> None:
    assert tuple(_node(spec_schema, "ingress.controller")["enum"]) == model.CONTROLLERS
    assert tuple(_node(spec_schema, "passive.observe")["enum"]) == model.OBSERVE_MODES
    assert tuple(_node(spec_schema, "passive.onError")["enum"]) == model.ON_ERROR_ACTIONS
    assert tuple(_node(spec_schema, "rollout")["enum"]) == model.ROLLOUTS
    operators = spec_schema["properties"]["selector"]["properties"]["matchExpressions"]["items"]["properties"]
    assert tuple(operators["operator"]["enum"]) == model.SELECTOR_OPERATORS


def test_path_pattern_matches(spec_schema: dict[str, Any]) -> None:
    assert _node(spec_schema, "httpCheck.path")["pattern"] == model.HTTP_PATH_PATTERN


def test_every_crd_field_is_known_to_the_parser_and_exercised(spec_schema: dict[str, Any]) -> None:
    assert _leaf_paths(spec_schema) == _spec_paths(FULL_SPEC)
    model.parse_policy(FULL_SPEC)  # and the parser accepts all of them


@pytest.mark.parametrize("text", ["500ms", "3s", "2m", "1h30m", "1.5s", "250us", "0s", "168h"])
def test_go_form_durations_match_the_one_pattern_and_parse(text: str) -> None:
    assert re.match(model.DURATION_PATTERN, text)
    parse_duration(text, "x")


def test_days_are_refused_because_cel_duration_cannot_read_them() -> None:
    assert not re.match(model.DURATION_PATTERN, "1d")
    with pytest.raises(ValueError, match="units us, ms, s, m, h"):
        parse_duration("1d", "x")


def test_the_typed_models_defaults_are_the_defaults_table() -> None:
    """A spec with only a selector parses to the model's own defaults: policy_model.py and DEFAULTS agree."""
    selector = {"matchLabels": {"app": "resizer"}}
    parsed = model.parse_policy({"selector": selector})
    assert parsed == model.HealthPolicy(selector=parsed.selector)
    # and the table is what the parser filled in, field by field (durations in seconds)
    filled = {
        "ingress.controller": parsed.ingress.controller, "httpCheck.path": parsed.http_check.path,
        "httpCheck.port": parsed.http_check.port, "httpCheck.interval": parsed.http_check.interval,
        "httpCheck.rise": parsed.http_check.rise, "httpCheck.fall": parsed.http_check.fall,
        "httpCheck.expectStatus": parsed.http_check.expect_status, "agentCheck.port": parsed.agent_check.port,
        "agentCheck.interval": parsed.agent_check.interval, "memory.maxPercent": parsed.memory.max_percent,
        "disk.maxPercent": parsed.disk.max_percent, "deadlock.heartbeatTimeout": parsed.deadlock.heartbeat_timeout,
        "deadlock.maxJobDuration": parsed.deadlock.max_job_duration, "slowStart": parsed.slow_start,
        "metrics.finalScrapeTimeout": parsed.metrics.final_scrape_timeout, "rollout": parsed.rollout,
        "drain.enabled": parsed.drain.enabled,
    }
    passive = model.parse_policy({"selector": selector, "passive": {"observe": "layer7"}}).passive
    assert passive == model.Passive(observe="layer7")
    filled |= {"passive.errorLimit": passive.error_limit, "passive.onError": passive.on_error}
    expected = {dotted: parse_duration(value, dotted) if isinstance(value, str) and dotted in model.DURATION_RANGES
                else value for dotted, value in model.DEFAULTS.items()}
    assert filled == expected
