"""minReadySeconds for governed Deployments: the window between a pod's Ready and its first requests through
every HAProxy, which is the endpoint's propagation alone (see ready_window's docstring for why)."""

from __future__ import annotations

from candor_operator.ready_window import MIN_READY_SECONDS, PROPAGATION, needs_raise
from candor_operator.rollout import slim_deployment
from candor_operator.summary import summarize
from tests.cases.policy_cases import valid_spec


def test_the_window_is_the_propagation_in_whole_seconds_whatever_the_checks_and_the_slow_start() -> None:
    assert MIN_READY_SECONDS == 2 and PROPAGATION == 2.0
    meta = {"name": "web", "namespace": "shop", "uid": "u", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z"}
    # A new server enters HAProxy UP (no `rise` checks to wait for), the agent's first poll only sets its
    # weight, and slowStart only ramps it: none of them lengthens the window.
    specs = [valid_spec(httpCheck={"interval": "2s", "rise": 2}, agentCheck={"interval": "1s"}),
             valid_spec(httpCheck={"interval": "30s", "rise": 10}, agentCheck={"interval": "20s"}, slowStart="5m"),
             valid_spec(httpCheck={"interval": "500ms", "rise": 1}, agentCheck={"interval": "300ms"}, slowStart="0s")]
    for number, spec in enumerate(specs):
        summary = summarize({"metadata": {**meta, "uid": f"u{number}"}, "spec": spec})
        assert summary.valid and summary.min_ready_seconds == 2, spec


def test_only_a_lower_value_is_raised() -> None:
    body = {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                         "annotations": {"candor.io/inject": "true"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}}
    deployment = slim_deployment(body)
    assert deployment is not None and deployment["min_ready"] == 0 and deployment["resource_version"] == "7"
    assert needs_raise(deployment, 2)
    users = slim_deployment({**body, "spec": {**body["spec"], "minReadySeconds": 30}})
    assert users is not None and not needs_raise(users, 2)
    assert not needs_raise(deployment, None)  # an invalid policy asks for nothing


def test_the_policy_summary_carries_it_and_an_invalid_policy_none() -> None:
    meta = {"name": "web", "namespace": "shop", "uid": "u", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z"}
    assert summarize({"metadata": meta, "spec": valid_spec()}).min_ready_seconds == MIN_READY_SECONDS
    assert summarize({"metadata": {**meta, "uid": "v"}, "spec": valid_spec(slowStart="nope")}).min_ready_seconds is None
