"""The HealthPolicy is declared once, in candor_operator.policy_model: the committed CRD is what
candor_operator.crd generates from it, the typed fields have the types their declared kinds read, every
field is exercised by FULL_SPEC, and a new field reaches both the CRD and parse_policy from its one
declaration. (tests/unit/test_policy_reference.py holds the reference page to the same declaration.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml

from candor_operator import crd
from candor_operator import policy as model
from candor_operator.policy_fields import (
    Boolean,
    Choice,
    ChoiceList,
    Compare,
    Duration,
    Integer,
    LabelSelector,
    Section,
    Text,
    TextList,
    declared,
    duration,
    integer,
    leaves,
    lookup,
)
from candor_operator.policy_model import HealthPolicy, Selector
from candor_sidecar.durations import DURATION_PATTERN, parse_duration
from candor_sidecar.field_error import FieldError
from tests.cases.policy_cases import FULL_SPEC

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "healthpolicy.yaml"


def _models(root: type[Any] = HealthPolicy) -> list[type[Any]]:
    found = [root]
    for item in declared(root):
        if isinstance(item.spec.kind, Section):
            found += _models(item.spec.kind.model)
    return found


def _spec_paths(spec: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, value in spec.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict) and name != "selector":
            paths |= _spec_paths(value, dotted + ".")
        else:
            paths.add(dotted)
    return paths


def test_the_committed_crd_is_the_generated_one() -> None:
    if CRD_PATH.read_text() != crd.render():
        pytest.fail("crds/healthpolicy.yaml differs from what candor_operator/policy_model.py declares: "
                    "regenerate it (and the chart's copy) with `make crd`, never edit it by hand")


def test_the_generated_yaml_reads_back_as_the_crd() -> None:
    assert yaml.safe_load(crd.render()) == crd.build_crd()


def test_each_typed_field_has_the_type_its_kind_reads() -> None:
    for declaring in _models():
        hints = get_type_hints(declaring)
        defaults = {item.name: item.default for item in dataclasses.fields(declaring)}
        for item in declared(declaring):
            kind = item.spec.kind
            base: Any = {Integer: int, Duration: float, Text: str, Choice: str, Boolean: bool,
                         TextList: tuple[str, ...], ChoiceList: tuple[str, ...],
                         LabelSelector: Selector}.get(type(kind))
            if isinstance(kind, Section):
                base = kind.model
            expected = base | None if defaults[item.attribute] is None else base
            assert hints[item.attribute] == expected, f"{declaring.__name__}.{item.attribute}"


def test_every_rule_relates_declared_fields_of_one_kind() -> None:
    for rule in HealthPolicy.RULES:
        field, other = lookup(HealthPolicy, rule.field).spec, lookup(HealthPolicy, rule.other).spec
        if isinstance(rule, Compare):
            assert type(field.kind) is type(other.kind) and isinstance(field.kind, Duration | Integer), rule


def test_a_cross_field_rule_sits_on_the_innermost_object_holding_both_fields() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = spec["properties"]["deadlock"]["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".maxJobDuration"
    assert rule["message"] == "deadlock.maxJobDuration must be at least deadlock.heartbeatTimeout"


def test_every_field_is_exercised_by_the_full_spec() -> None:
    assert {dotted for dotted, _ in leaves(HealthPolicy)} == _spec_paths(FULL_SPEC)
    model.parse_policy(FULL_SPEC)  # and the parser accepts all of them


@dataclasses.dataclass(frozen=True)
class _Probe:
    """A model with one new field, as a developer would add it to policy_model."""

    retries: int = integer(3, 1, 10, "How often to try.")
    pause: float = duration("1s", "100ms", "1m")


def test_a_new_field_reaches_the_crd_and_the_parser_from_its_one_declaration() -> None:
    schema = crd._object_schema(_Probe, "probe.")["properties"]
    assert schema["retries"] == {"description": "How often to try.", "default": 3, "type": "integer",
                                 "minimum": 1, "maximum": 10}
    assert schema["pause"]["x-kubernetes-validations"] == [
        {"rule": "duration(self) >= duration('100ms') && duration(self) <= duration('1m')",
         "message": "probe.pause must be between 100ms and 1m"}]
    assert model._section(_Probe, None, "spec.probe") == _Probe(retries=3, pause=1.0)
    with pytest.raises(FieldError) as error:
        model._section(_Probe, {"retries": 11}, "spec.probe")
    assert str(error.value) == "spec.probe.retries: must be an integer from 1 to 10, got int 11"


@pytest.mark.parametrize("text", ["500ms", "3s", "2m", "1h30m", "1.5s", "250us", "0s", "168h"])
def test_go_form_durations_match_the_one_pattern_and_parse(text: str) -> None:
    assert re.fullmatch(DURATION_PATTERN, text)
    parse_duration(text, "x")


def test_days_are_refused_because_cel_duration_cannot_read_them() -> None:
    assert not re.fullmatch(DURATION_PATTERN, "1d")
    with pytest.raises(ValueError, match="units us, ms, s, m, h"):
        parse_duration("1d", "x")


def test_the_typed_models_defaults_are_the_crd_defaults() -> None:
    """A spec with only a selector parses to the model's own defaults, and each is the CRD's default."""
    selector = {"matchLabels": {"app": "resizer"}}
    parsed = model.parse_policy({"selector": selector})
    assert parsed == HealthPolicy(selector=parsed.selector)
    passive = model.parse_policy({"selector": selector, "passive": {"observe": "layer7"}}).passive
    assert passive == model.Passive(observe="layer7")
    weight = model.parse_policy({"selector": selector, "agentCheck": {"weight": {}}}).agent_check.weight
    assert weight == model.LoadWeight()
    assert parsed.agent_check.weight is None  # load weights are off unless asked for
    assert model.parse_policy({"selector": selector, **_nested(model.DEFAULTS)}) == parsed


def _nested(dotted: dict[str, object]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}, leaving out the optional sections (passive, agentCheck.weight): set, they
    switch their feature on."""
    result: dict[str, Any] = {}
    for path, value in dotted.items():
        *parents, last = path.split(".")
        if parents[:1] == ["passive"] or parents[:2] == ["agentCheck", "weight"]:
            continue
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return result
