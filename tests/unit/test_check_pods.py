"""`candor check`'s explanations for one pod: why it has no sidecar, what its agent answers."""

from __future__ import annotations

import json
from typing import Any

from candor_operator.check_pods import agent_answer, why_not_injected

POLICY = {"metadata": {"name": "web", "creationTimestamp": "2026-01-01T10:00:00Z"}}
WEBHOOK = "2026-01-01T09:00:00Z"


def pod(created: str = "2026-01-01T11:00:00Z", inject: bool = True, deployment: str | None = None,
        **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p", "creationTimestamp": created,
                                "annotations": {"candor.io/inject": "true"} if inject else {}}
    if deployment:
        metadata["labels"] = {"pod-template-hash": "abc"}
        metadata["ownerReferences"] = [{"kind": "ReplicaSet", "name": f"{deployment}-abc", "controller": True}]
    return {"metadata": metadata, "spec": {"containers": [{"name": "app"}], **spec}}


def test_each_reason_in_the_order_a_user_should_fix_them() -> None:
    asked_by_deployment = {"api": {"metadata": {"annotations": {"candor.io/inject": "true"}}}}
    assert why_not_injected(pod(inject=False, deployment="shop"), POLICY, {}, WEBHOOK).startswith(
        "not opted in: annotate Deployment shop with candor.io/inject")
    assert why_not_injected(pod(), POLICY, {}, None).startswith("no injection webhook is configured")
    early = why_not_injected(pod(created="2026-01-01T08:00:00Z", inject=False, deployment="api"), POLICY,
                             asked_by_deployment, WEBHOOK)
    assert early.startswith("created at 2026-01-01T08:00:00Z, before the injection webhook existed")
    assert early.endswith("`kubectl rollout restart deployment/api`")
    assert "before HealthPolicy web" in why_not_injected(pod(created="2026-01-01T09:30:00Z"), POLICY, {}, WEBHOOK)
    collides = pod(volumes=[{"name": "candor-state", "emptyDir": {}}])
    assert why_not_injected(collides, POLICY, {}, WEBHOOK).startswith("its spec collides with what Candor adds")
    assert why_not_injected(pod(hostNetwork=True), POLICY, {}, WEBHOOK).startswith("it uses hostNetwork")
    assert why_not_injected(pod(), POLICY, {}, WEBHOOK).startswith("the webhook did not inject it when it was created")


def test_agent_answers_are_read_from_the_sidecars_health_document() -> None:
    def doc(status: str, **extra: Any) -> str:
        return json.dumps({"status": status, "checks": {}, **extra})

    assert agent_answer(200, doc("pass")) == ("up", "every check passes")
    assert agent_answer(503, doc("fail", output="memory 91% > 80%")) == ("down", "memory 91% > 80%")
    assert agent_answer(200, doc("pass", notes=["maintenance annotation set: the agent answers maint"]))[0] == "maint"
    assert agent_answer(503, doc("fail", notes=["pod terminating (preStop): the agent answers drain"]))[0] == "drain"
    assert agent_answer(502, "Bad Gateway")[0] == "unknown"
