"""Candor's record of the Service annotations it owns, and the merge patches that follow a policy."""

from __future__ import annotations

import json
from collections.abc import Mapping

from candor_operator.api_names import MANAGED_ANNOTATIONS
from candor_operator.ownership import annotation_patch, parse_record, record_of

POLICY_V1 = {"haproxy.org/check": "true", "haproxy.org/check-interval": "2s", "haproxy.org/pod-maxconn": "30"}
POLICY_V2 = {"haproxy.org/check": "true", "haproxy.org/check-interval": "5s"}  # maxConn removed
USER = {"team": "payments", "haproxy.org/timeout-server": "50s"}


def apply(annotations: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """What the API server does with a JSON merge patch on metadata.annotations."""
    result = dict(annotations)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def test_first_write_sets_the_annotations_and_records_them() -> None:
    after = apply(USER, annotation_patch(USER, POLICY_V1, "web"))
    assert {k: after[k] for k in POLICY_V1} == POLICY_V1
    assert {k: after[k] for k in USER} == USER
    record = record_of(after)
    assert record.policy == "web" and record.keys == frozenset(POLICY_V1) and record.replaced == {}


def test_a_converged_service_needs_no_request() -> None:
    after = apply(USER, annotation_patch(USER, POLICY_V1, "web"))
    assert annotation_patch(after, POLICY_V1, "web") == {}


def test_a_removed_setting_removes_exactly_that_key() -> None:
    v1 = apply(USER, annotation_patch(USER, POLICY_V1, "web"))
    patch = annotation_patch(v1, POLICY_V2, "web")
    assert patch["haproxy.org/pod-maxconn"] is None
    assert not any(key in patch for key in USER)
    v2 = apply(v1, patch)
    assert "haproxy.org/pod-maxconn" not in v2
    assert v2["haproxy.org/check-interval"] == "5s"
    assert {k: v2[k] for k in USER} == USER


def test_release_removes_everything_candor_wrote_and_nothing_else() -> None:
    v1 = apply(USER, annotation_patch(USER, POLICY_V1, "web"))
    released = apply(v1, annotation_patch(v1, None, "web"))
    assert released == USER
    assert annotation_patch(released, None, None) == {}


def test_a_user_value_the_policy_overrode_comes_back_on_release() -> None:
    before = {**USER, "haproxy.org/check-interval": "10s"}
    owned = apply(before, annotation_patch(before, POLICY_V1, "web"))
    assert owned["haproxy.org/check-interval"] == "2s"
    assert record_of(owned).replaced == {"haproxy.org/check-interval": "10s"}
    # Still remembered across later policy changes, and restored when the setting leaves the policy.
    without = apply(owned, annotation_patch(owned, {"haproxy.org/check": "true"}, "web"))
    assert without["haproxy.org/check-interval"] == "10s"
    assert apply(without, annotation_patch(without, None, "web")) == before


def test_a_user_edit_of_a_candor_key_is_set_back_but_user_keys_stay() -> None:
    owned = apply(USER, annotation_patch(USER, POLICY_V1, "web"))
    drifted = {**owned, "haproxy.org/check-interval": "9s", "new-user-key": "x"}
    patch = annotation_patch(drifted, POLICY_V1, "web")
    assert patch == {"haproxy.org/check-interval": "2s"}


def test_handing_over_to_another_policy_keeps_the_users_original_values() -> None:
    before = {**USER, "haproxy.org/check": "false"}
    owned_by_a = apply(before, annotation_patch(before, POLICY_V1, "a"))
    owned_by_b = apply(owned_by_a, annotation_patch(owned_by_a, POLICY_V2, "b"))
    assert record_of(owned_by_b).policy == "b"
    assert "haproxy.org/pod-maxconn" not in owned_by_b
    assert apply(owned_by_b, annotation_patch(owned_by_b, None, "b")) == before


def test_a_mangled_record_owns_nothing() -> None:
    for text in ("not json", "[1, 2]", json.dumps({"keys": "haproxy.org/check"}), ""):
        assert parse_record(text).keys == frozenset()
    annotations = {"haproxy.org/check": "true", MANAGED_ANNOTATIONS: "garbage"}
    # Releasing a Service whose record is unreadable must not delete a key it cannot prove it wrote.
    assert annotation_patch(annotations, None, None) == {MANAGED_ANNOTATIONS: None}
