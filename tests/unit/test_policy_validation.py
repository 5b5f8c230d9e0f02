"""parse_policy: defaults, a full policy, and every kind of invalid policy refused with its field named."""

from __future__ import annotations

from typing import Any

import pytest

from candor_operator.policy import HealthPolicy, parse_policy
from candor_sidecar.field_error import FieldError
from tests.cases.policy_cases import FULL_SPEC, INVALID_POLICIES, valid_spec


def test_minimal_policy_gets_the_documented_defaults() -> None:
    policy = parse_policy(valid_spec())
    assert policy.selector.as_label_selector() == {"matchLabels": {"app": "demo"}}
    assert policy.ingress.controller == "haproxytech" and policy.ingress.services == ()
    check = policy.http_check
    assert (check.path, check.port, check.interval, check.rise, check.fall, check.expect_status) == (
        "/health", 9898, 2.0, 2, 3, 200)
    assert check.timeout is None and check.effective_timeout == 2.0
    assert (policy.agent_check.port, policy.agent_check.interval) == (9999, 2.0)
    assert policy.memory.max_percent == 80
    assert (policy.disk.paths, policy.disk.max_percent) == ((), 90)
    assert (policy.deadlock.heartbeat_timeout, policy.deadlock.max_job_duration) == (30.0, 600.0)
    assert policy.slow_start == 30.0 and policy.max_conn is None and policy.queue_timeout is None
    assert policy.passive is None and policy.metrics.final_scrape_timeout == 20.0
    assert policy.rollout == "Automatic"


def test_full_policy_parses_every_field() -> None:
    policy = parse_policy(FULL_SPEC)
    assert isinstance(policy, HealthPolicy)
    assert policy.selector.as_label_selector() == FULL_SPEC["selector"]
    assert policy.ingress.services == ("demo", "demo-admin")
    assert policy.http_check.timeout == 0.5 and policy.http_check.effective_timeout == 0.5
    assert policy.disk.paths == ("/data", "/tmp")
    assert (policy.deadlock.heartbeat_timeout, policy.deadlock.max_job_duration) == (15.0, 1800.0)
    assert (policy.slow_start, policy.max_conn, policy.queue_timeout) == (60.0, 30, 5.0)
    assert policy.passive is not None
    assert (policy.passive.observe, policy.passive.error_limit, policy.passive.on_error) == ("layer7", 10, "mark-down")
    assert policy.metrics.final_scrape_timeout == 30.0 and policy.rollout == "Manual"


def test_the_model_is_frozen() -> None:
    policy = parse_policy(valid_spec())
    with pytest.raises(AttributeError):
        policy.slow_start = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "field"), [pytest.param(spec, field, id=case) for case, spec, field in INVALID_POLICIES]
)
def test_invalid_policy_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as error:
        parse_policy(spec)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")
    assert error.value.problem  # says what is allowed, not just "invalid"


def test_there_are_at_least_twenty_kinds_of_invalid_policy() -> None:
    assert len({case for case, _, _ in INVALID_POLICIES}) >= 20


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (valid_spec(httpCheck={"interval": "50ms"}), "between 100ms and 1h"),
        (valid_spec(memory={"maxPercent": 150}), "from 1 to 100"),
        (valid_spec(ingress={"controller": "nginx"}), "haproxytech, haproxy-ingress"),
        (valid_spec(slowStart="1s", httpCheck={"interval": "5s"}), "at least httpCheck.interval (5s)"),
        (valid_spec(deadlock={"maxJobDuration": "1d"}), "units us, ms, s, m, h"),
    ],
)
def test_errors_state_the_allowed_range(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(FieldError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(spec)


def test_unknown_fields_are_named_with_the_allowed_ones() -> None:
    with pytest.raises(FieldError) as error:
        parse_policy(valid_spec(slowstart="30s"))
    assert error.value.field == "spec.slowstart"
    assert "slowStart" in error.value.problem
    with pytest.raises(FieldError) as nested:
        parse_policy(valid_spec(httpCheck={"intervall": "2s"}))
    assert nested.value.field == "spec.httpCheck.intervall"


def test_a_section_of_the_wrong_type_is_named() -> None:
    with pytest.raises(FieldError) as error:
        parse_policy(valid_spec(httpCheck="fast"))
    assert error.value.field == "spec.httpCheck"


def test_null_fields_mean_unset_as_in_kubernetes() -> None:
    policy = parse_policy({"selector": {"matchLabels": {"app": "demo"}}, "maxConn": None, "passive": None})
    assert policy.max_conn is None and policy.passive is None


def test_zero_slow_start_disables_the_ramp_whatever_the_intervals() -> None:
    policy = parse_policy(valid_spec(slowStart="0s", httpCheck={"interval": "10s"}))
    assert policy.slow_start == 0.0


def test_go_duration_forms_are_accepted() -> None:
    policy = parse_policy(valid_spec(deadlock={"heartbeatTimeout": "1m30s", "maxJobDuration": "1h30m"},
                                     httpCheck={"interval": "1.5s", "timeout": "250ms"}))
    assert policy.deadlock.heartbeat_timeout == 90.0 and policy.deadlock.max_job_duration == 5400.0
    assert policy.http_check.interval == 1.5 and policy.http_check.timeout == 0.25


def test_the_prefix_names_where_the_spec_came_from() -> None:
    with pytest.raises(FieldError) as error:
        parse_policy(valid_spec(maxConn=0), field="policy.yaml: shop/demo: spec")
    assert error.value.field == "policy.yaml: shop/demo: spec.maxConn"
