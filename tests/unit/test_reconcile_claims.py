"""Which policy owns a Service, which Services a policy targets, conditions, and the policy summary."""

from __future__ import annotations

from typing import Any

import pytest

from candor_operator import status
from candor_operator.claims import PolicyView, decide
from candor_operator.labels import policy_targets_service, selector_matches, selector_to_query
from candor_operator.ownership import annotation_patch
from candor_operator.rollout import (
    HealPacer,
    governing_policy,
    heal_mark,
    missed_pods,
    pods_current,
    slim_deployment,
    wanted_hash,
)
from candor_operator.summary import configmap_body, summarize
from candor_sidecar.field_error import FieldError
from tests.cases.policy_cases import FULL_SPEC, valid_spec

ANNOTATIONS = {"haproxy.org/check": "true"}


def service(name: str = "web", selector: dict[str, str] | None = None, annotations: dict[str, str] | None = None
            ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "1", "annotations": annotations or {}},
            "spec": {"selector": {"app": "web"} if selector is None else selector}}


def policy(name: str, created: str, *, valid: bool = True, deleting: bool = False,
           spec: dict[str, Any] | None = None) -> PolicyView:
    return PolicyView(name, created, spec or {"selector": {"matchLabels": {"app": "web"}}},
                      {"haproxy.org/check": "true", "x-owner": name} if valid else None, deleting)


def test_the_older_policy_wins_and_ties_break_by_name() -> None:
    older = policy("zeta", "2026-01-01T00:00:00Z")
    newer = policy("alpha", "2026-01-02T00:00:00Z")
    twin = policy("beta", "2026-01-01T00:00:00Z")
    assert decide(service(), [newer, older]).owner == "zeta"
    assert decide(service(), [older, newer, twin]).owner == "beta"
    assert decide(service(), [twin, older, newer]).owner == "beta"


def test_an_invalid_owner_keeps_its_service_untouched_and_an_invalid_newcomer_claims_nothing() -> None:
    owned = service(annotations={"candor.io/managed-annotations": '{"policy":"old","keys":[],"replaced":{}}'})
    old, new = policy("old", "2026-01-01T00:00:00Z", valid=False), policy("new", "2026-02-01T00:00:00Z")
    decision = decide(owned, [old, new])
    assert decision.untouched
    assert decide(service(), [policy("bad", "2026-01-01T00:00:00Z", valid=False)]).owner is None
    assert decide(service(), [policy("bad", "2026-01-01T00:00:00Z", valid=False),
                              policy("good", "2026-03-01T00:00:00Z")]).owner == "good"


def test_a_deleting_policy_hands_over_to_the_next_in_line() -> None:
    first = policy("first", "2026-01-01T00:00:00Z", deleting=True)
    second = policy("second", "2026-01-02T00:00:00Z")
    assert decide(service(), [first, second]).owner == "second"
    assert decide(service(), [first]).desired is None


def test_targets_by_selector_or_by_explicit_names() -> None:
    governs_web = {"selector": {"matchLabels": {"app": "web"}}}
    assert policy_targets_service(governs_web, service(selector={"app": "web", "tier": "front"}))
    assert not policy_targets_service(governs_web, service(selector={"tier": "front"}))
    assert not policy_targets_service(governs_web, service(selector={}))  # external endpoints: never implicit
    assert not policy_targets_service({"selector": {}}, service())  # an empty selector never means "everything"
    explicit = {"selector": {"matchLabels": {"app": "other"}}, "ingress": {"services": ["admin"]}}
    assert policy_targets_service(explicit, service("admin"))
    assert not policy_targets_service(explicit, service("web"))


def test_selector_expressions_follow_kubernetes_semantics() -> None:
    selector = {"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["front", "api"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "zone", "operator": "NotIn", "values": ["b"]},
        {"key": "app", "operator": "Exists"}]}
    assert selector_matches(selector, {"app": "web", "tier": "api"})
    assert selector_matches(selector, {"app": "web", "tier": "api", "zone": "a"})
    assert not selector_matches(selector, {"app": "web", "tier": "api", "zone": "b"})
    assert not selector_matches(selector, {"app": "web", "tier": "api", "canary": "1"})
    assert not selector_matches(selector, {"app": "web", "tier": "db"})
    assert selector_to_query(selector) == "app=web,tier in (api,front),!canary,zone notin (b),app"
    with pytest.raises(FieldError, match=r"matchExpressions\[0\]\.operator"):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Like"}]}, {})


def test_conditions_keep_their_transition_time_until_the_status_flips() -> None:
    first = status.merge_conditions(None, status.ready(["web"], "cm"), 1, now="2026-01-01T00:00:00Z")
    same = status.merge_conditions(first, status.ready(["web"], "cm"), 1, now="2026-01-02T00:00:00Z")
    assert same == first
    flipped = status.merge_conditions(first, status.conflict([], {"web": "older"}, "cm"), 2,
                                      now="2026-01-03T00:00:00Z")
    by_type = {c["type"]: c for c in flipped}
    assert by_type["Ready"]["status"] == "False" and by_type["Ready"]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert by_type["Invalid"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert "Service web is owned by HealthPolicy older" in by_type["Conflict"]["message"]


def body(name: str, spec: dict[str, Any], created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "creationTimestamp": created,
                         "generation": 3}, "spec": spec}


def test_a_valid_policy_summary_carries_annotations_config_and_pod_settings() -> None:
    summary = summarize(body("web", FULL_SPEC))
    assert summary.valid and summary.annotations
    assert any(key.startswith("haproxy-ingress.github.io/") for key in summary.annotations)
    assert summary.target is not None and summary.target.final_scrape_timeout == 30.0
    assert summary.target.http_port == 9898 and summary.target.agent_port == 9999
    assert summary.rollout == "Manual"
    configmap = configmap_body(summary)
    assert configmap["metadata"]["name"] == "candor-sidecar-web"
    owner = configmap["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "name": "web", "uid": "uid-web",
                     "controller": True}
    assert "finalScrapeTimeout: 30s" in configmap["data"]["sidecar.yaml"]


def test_an_invalid_policy_summary_names_the_field_and_renders_nothing() -> None:
    summary = summarize(body("bad", valid_spec(memory={"maxPercent": 150})))
    assert not summary.valid and summary.annotations is None and summary.sidecar_yaml is None
    assert summary.error_field == "spec.memory.maxPercent"
    assert summary.error_problem


def test_the_governing_policy_and_idempotent_rollout() -> None:
    older = summarize(body("older", valid_spec(selector={"matchLabels": {"app": "demo"}}), "2026-01-01T00:00:00Z"))
    newer = summarize(body("newer", valid_spec(), "2026-02-01T00:00:00Z"))
    assert governing_policy({"app": "demo", "pod-template-hash": "x"}, [newer, older]) is older
    assert governing_policy({"app": "other"}, [newer, older]) is None
    asked = slim_deployment({"metadata": {"name": "d", "namespace": "shop",
                                          "annotations": {"candor.io/inject": "true"}},
                             "spec": {"template": {"metadata": {"labels": {"app": "demo"}}}}})
    assert asked is not None
    wanted = wanted_hash(asked, older, "img:1")
    assert wanted is not None
    assert wanted_hash({**asked, "hash": wanted}, older, "img:1") is None  # restarted once, not again
    assert wanted_hash({**asked, "hash": wanted}, older, "img:2") is not None  # a new sidecar image rolls out
    manual = summarize(body("manual", valid_spec(rollout="Manual")))
    assert wanted_hash(asked, manual, "img:1") is None
    stamped = {"metadata": {"annotations": {"candor.io/config-hash": wanted}}}
    assert pods_current([stamped, stamped], wanted)
    assert pods_current([], wanted)  # no pods yet: they will pass the webhook
    assert not pods_current([stamped, {"metadata": {}}], wanted)  # one pod without the sidecar
    assert slim_deployment({"metadata": {"name": "d", "annotations": {}}, "spec": {}}) is None


def test_the_claim_decision_drives_the_patch() -> None:
    web = service()
    decision = decide(web, [policy("a", "2026-01-01T00:00:00Z")])
    patch = annotation_patch(web["metadata"]["annotations"], decision.desired, decision.owner)
    assert patch["x-owner"] == "a" and '"policy":"a"' in str(patch["candor.io/managed-annotations"])


def test_the_service_index_keeps_only_keys_candor_could_write() -> None:
    from candor_operator.policy import parse_policy
    from candor_operator.render import render_annotations
    from candor_operator.services import RELEVANT_PREFIXES, slim_service

    for controller in ("haproxytech", "haproxy-ingress"):
        rendered = render_annotations(parse_policy(FULL_SPEC), controller)
        assert all(key.startswith(RELEVANT_PREFIXES) for key in rendered), controller
    slim = slim_service({"metadata": {"name": "web", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}", "haproxy.org/check": "false", "team": "x"}},
        "spec": {"selector": {"app": "web"}}})
    assert slim["metadata"]["annotations"] == {"haproxy.org/check": "false"}


def pod(uid: str, hash_: str | None, heal: str | None = None, injected: bool = False, **spec: Any) -> dict[str, Any]:
    annotations = {k: v for k, v in (("candor.io/config-hash", hash_), ("candor.io/heal", heal)) if v is not None}
    if injected:
        annotations["candor.io/status"] = "injected"
    return {"metadata": {"uid": uid, "annotations": annotations},
            "spec": spec or {"containers": [{"name": "app", "image": "demo:1"}]}}


def test_missed_pods_are_the_current_templates_pods_the_webhook_would_inject() -> None:
    deployment = {"hash": "h2", "heal": None}
    pods = [
        pod("injected", "h2", injected=True),
        pod("missed", "h2"),
        pod("older template", "h1"),  # being replaced by the rollout anyway
        pod("other heal", "h2", heal="x"),  # from an earlier heal's template
        {**pod("declined", "h2"), "metadata": {"uid": "declined", "annotations": {
            "candor.io/config-hash": "h2", "candor.io/status": "skipped"}}},  # seen by the webhook, left alone
        {**pod("leaving", "h2"), "metadata": {"uid": "leaving", "deletionTimestamp": "2026-01-01T00:00:00Z",
                                              "annotations": {"candor.io/config-hash": "h2"}}},
    ]
    assert [p["metadata"]["uid"] for p in missed_pods(pods, deployment)] == ["missed"]
    assert missed_pods(pods, {"hash": "h2", "heal": "x"}) == [pods[3]]


def test_the_heal_mark_depends_on_the_pods_not_their_order() -> None:
    a, b = pod("a", "h"), pod("b", "h")
    assert heal_mark([a, b]) == heal_mark([b, a]) != heal_mark([a])


def test_heals_of_one_deployment_are_spaced_out_until_its_pods_are_injected() -> None:
    now = [0.0]
    pacer = HealPacer(first=60.0, maximum=200.0, clock=lambda: now[0])
    key, other = ("ns", "web"), ("ns", "api")
    assert pacer.allowed(key) and pacer.last_mark(key) is None
    pacer.healed(key, "m1")
    assert pacer.last_mark(key) == "m1"  # an event from before the patch names the same pods: nothing to do
    assert not pacer.allowed(key) and pacer.allowed(other)
    now[0] = 60.0
    assert pacer.allowed(key)
    pacer.healed(key, "m2")  # missed again: the next waits twice as long
    now[0] = 60.0 + 119.0
    assert not pacer.allowed(key)
    now[0] = 60.0 + 120.0
    pacer.healed(key, "m3")
    now[0] += 199.0
    assert not pacer.allowed(key)  # capped at the maximum
    now[0] += 1.0
    assert pacer.allowed(key)
    pacer.healed(key, "m4")
    pacer.settled(key)  # the current pods have the sidecar: the next heal is immediate again
    assert pacer.allowed(key) and pacer.last_mark(key) is None
