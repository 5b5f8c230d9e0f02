"""minReadySeconds from the policy: the window between a pod's Ready and its first requests through HAProxy."""

from __future__ import annotations

from candor_operator.policy import parse_policy
from candor_operator.ready_window import PROPAGATION, min_ready_seconds, needs_raise
from candor_operator.rollout import slim_deployment
from candor_operator.summary import summarize
from tests.cases.policy_cases import valid_spec


def test_the_window_is_rise_checks_one_agent_poll_and_the_propagation_rounded_up() -> None:
    policy = parse_policy(valid_spec(httpCheck={"interval": "2s", "rise": 2}, agentCheck={"interval": "1s"}))
    assert min_ready_seconds(policy) == 2 * 2 + 1 + PROPAGATION == 7
    fast = parse_policy(valid_spec(httpCheck={"interval": "500ms", "rise": 1}, agentCheck={"interval": "300ms"}))
    assert min_ready_seconds(fast) == 3  # 0.5 + 0.3 + 2 = 2.8, up to whole seconds


def test_only_a_lower_value_is_raised() -> None:
    body = {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                         "annotations": {"candor.io/inject": "true"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}}
    deployment = slim_deployment(body)
    assert deployment is not None and deployment["min_ready"] == 0 and deployment["resource_version"] == "7"
    assert needs_raise(deployment, 7)
    users = slim_deployment({**body, "spec": {**body["spec"], "minReadySeconds": 30}})
    assert users is not None and not needs_raise(users, 7)
    assert not needs_raise(deployment, None)  # an invalid policy asks for nothing


def test_the_policy_summary_carries_it_and_an_invalid_policy_none() -> None:
    meta = {"name": "web", "namespace": "shop", "uid": "u", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z"}
    assert summarize({"metadata": meta, "spec": valid_spec()}).min_ready_seconds == 2 * 2 + 2 + 2
    assert summarize({"metadata": {**meta, "uid": "v"}, "spec": valid_spec(slowStart="nope")}).min_ready_seconds is None
