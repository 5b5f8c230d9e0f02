"""Label selectors as the API server evaluates them: the policy's pods and the Services it targets."""

from __future__ import annotations

from typing import Any

import pytest

from candor_operator.labels import policy_targets_service, selector_matches
from candor_sidecar.field_error import FieldError

SELECTOR: dict[str, Any] = {
    "matchLabels": {"app": "resizer"},
    "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "jobs"]},
        {"key": "track", "operator": "NotIn", "values": ["canary"]},
        {"key": "team", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist"},
    ],
}
GOVERNED = {"app": "resizer", "tier": "jobs", "team": "imaging"}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (GOVERNED, True),
        ({**GOVERNED, "track": "stable"}, True),
        ({**GOVERNED, "track": "canary"}, False),  # NotIn
        ({**GOVERNED, "tier": "db"}, False),  # In
        ({k: v for k, v in GOVERNED.items() if k != "tier"}, False),  # In needs the key
        ({k: v for k, v in GOVERNED.items() if k != "team"}, False),  # Exists
        ({**GOVERNED, "legacy": "yes"}, False),  # DoesNotExist
        ({**GOVERNED, "app": "other"}, False),  # matchLabels
    ],
)
def test_pods_and_services_match_the_same_way(labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(SELECTOR, labels) is expected
    service = {"metadata": {"name": "resizer"}, "spec": {"selector": labels}}
    assert policy_targets_service({"selector": SELECTOR}, service) is expected


def test_a_bad_expression_names_its_field() -> None:
    bad = {"matchExpressions": [{"key": "tier", "operator": "In", "values": []}]}
    with pytest.raises(FieldError, match=r"spec\.selector\.matchExpressions\[0\]\.values"):
        selector_matches(bad, {"tier": "web"})
    assert not policy_targets_service({"selector": bad}, {"metadata": {"name": "x"}, "spec": {"selector": {"a": "b"}}})


def test_explicit_services_win_and_selectorless_services_are_never_implicit() -> None:
    explicit = {"selector": SELECTOR, "ingress": {"services": ["front"]}}
    assert policy_targets_service(explicit, {"metadata": {"name": "front"}, "spec": {}})
    assert not policy_targets_service(explicit, {"metadata": {"name": "resizer"}, "spec": {"selector": GOVERNED}})
    assert not policy_targets_service({"selector": SELECTOR}, {"metadata": {"name": "ext"}, "spec": {}})
