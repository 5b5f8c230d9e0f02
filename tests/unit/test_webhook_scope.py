"""Which Deployments get the label the pod webhook's matchConditions select on (governed.py), and when a
replica that does not watch counts as ready (readiness.py)."""

from __future__ import annotations

import datetime
from typing import Any

from candor_operator.api_names import INJECT_LABEL
from candor_operator.governed import label_template
from candor_operator.readiness import outranked


def deployment(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
               image: str = "shop:1", template_annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "web", "annotations": annotations or {}},
            "spec": {"template": {"metadata": {"labels": {"app": "web", **(labels or {})},
                                               "annotations": template_annotations or {}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


ASKS = {"candor.io/inject": "true"}


def test_a_new_annotated_deployment_is_labelled() -> None:
    assert label_template(deployment(ASKS), None)
    assert label_template(deployment(template_annotations={"candor.io/inject": " TRUE "}), None)


def test_annotating_without_a_template_change_labels_nothing_so_nothing_rolls() -> None:
    assert not label_template(deployment(ASKS), deployment())


def test_a_template_change_of_an_annotated_deployment_carries_the_label() -> None:
    assert label_template(deployment(ASKS, image="shop:2"), deployment(ASKS))


def test_unannotated_or_already_labelled_deployments_are_left_alone() -> None:
    assert not label_template(deployment(), None)
    assert not label_template(deployment({"candor.io/inject": "false"}), None)
    assert not label_template(deployment(ASKS, labels={INJECT_LABEL: "true"}), None)


def test_a_replica_not_yet_watching_and_not_outranked_is_not_ready() -> None:
    """The standby rule reads kopf's peering status: only a live peer of higher priority excuses the watches."""
    now = datetime.datetime.now(datetime.UTC)
    live = {"priority": 200, "lifetime": 60, "lastseen": now.isoformat()}
    stale = {"priority": 200, "lifetime": 60, "lastseen": (now - datetime.timedelta(minutes=5)).isoformat()}
    assert outranked({"a@1": live}, 100)
    assert not outranked({"a@1": live}, 300)
    assert not outranked({"a@1": stale}, 100)
    assert not outranked({"a@1": "garbage", "b@2": {"lastseen": "never"}}, 100)
