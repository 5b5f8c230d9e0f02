"""The CRD's OpenAPI schema and CEL rules, evaluated offline (cel-python), agree with the case table.

Every invalid policy is refused by the CRD with the same field the Python parser names, and the
valid ones pass, so the API server and `candor render` refuse the same things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cluster.crd_schema import validate_spec
from tests.cases.policy_cases import FULL_SPEC, INVALID_POLICIES, valid_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("spec", "field"), [pytest.param(spec, field, id=case) for case, spec, field in INVALID_POLICIES]
)
def test_crd_refuses_each_invalid_policy_at_the_same_field(spec: dict[str, Any], field: str) -> None:
    errors = validate_spec(spec)
    assert field in {error.field for error in errors}, errors
    # A rule may fail to evaluate only on a value the schema already refused (duration("2 s")).
    if any(e.problem.startswith("CEL error") for e in errors):
        assert any(not e.problem.startswith("CEL error") for e in errors), errors


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(valid_spec(), id="minimal"),
        pytest.param(FULL_SPEC, id="full"),
        pytest.param(valid_spec(slowStart="0s", httpCheck={"interval": "10s"}), id="no ramp"),
        pytest.param(yaml.safe_load((ROOT / "examples" / "healthpolicy.yaml").read_text())["spec"], id="example"),
    ],
)
def test_crd_accepts_valid_policies(spec: dict[str, Any]) -> None:
    assert validate_spec(spec) == []


def test_defaults_make_the_cross_field_rules_bite() -> None:
    """slowStart defaults to 30s: a 1m check interval without a slowStart is refused, as in the API server."""
    errors = validate_spec(valid_spec(httpCheck={"interval": "1m"}))
    assert [error.field for error in errors] == ["spec.slowStart"]
