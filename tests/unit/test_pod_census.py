"""Counting governed pods from metadata alone, and condition reasons tools can match on."""

from __future__ import annotations

import re
from typing import Any

from candor_operator import status
from candor_operator.api_names import VERSION_ANNOTATION
from candor_operator.crd import CONDITION_REASON_PATTERN
from candor_operator.pod_census import PodCensus, count


def meta(annotations: dict[str, str] | None = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"annotations": annotations or {}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": metadata}


def test_pods_are_counted_by_their_injection_annotations() -> None:
    injected = {"candor.io/status": "injected", VERSION_ANNOTATION: "0.1.0"}
    pods = [
        meta(injected), meta(injected),
        meta({"candor.io/status": "injected", VERSION_ANNOTATION: "0.0.9"}),
        meta({"candor.io/status": "injected"}),  # injected by a release that did not record its version
        meta({"candor.io/inject": "true"}),  # asked, but missed the webhook
        meta(),
        meta(injected, deleting=True),  # terminating: not counted at all
    ]
    found = count(pods, version="0.1.0")
    assert found == PodCensus(total=6, with_sidecar=4, other_version=2)
    assert found.as_status() == {"pods": 6, "podsWithSidecar": 4, "podsWithoutSidecar": 2,
                                 "podsOtherSidecarVersion": 2}


def test_every_condition_reason_is_camel_case() -> None:
    conditions = [*status.ready(["web"], "cm"), *status.invalid("spec.x", "bad"),
                  *status.conflict([], {"web": "old"}, "cm")]
    for condition in conditions:
        assert re.fullmatch(CONDITION_REASON_PATTERN, condition.reason), condition
        assert condition.message
