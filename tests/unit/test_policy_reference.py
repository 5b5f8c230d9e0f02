"""The HealthPolicy reference page is generated from the one declaration (candor_operator.policy_model):
the committed page is the generator's output, and every field says what it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from candor_operator import policy_reference
from candor_operator.policy_fields import Section, declared, leaves
from candor_operator.policy_model import HealthPolicy

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "healthpolicy.md"


def test_the_committed_reference_page_is_the_generated_one() -> None:
    if PAGE.read_text() != policy_reference.render():
        pytest.fail("docs/reference/healthpolicy.md differs from what candor_operator/policy_model.py declares: "
                    "regenerate it with `make reference` (`make crd` runs it too), never edit it by hand")


def test_every_field_and_section_has_a_description() -> None:
    """The page's "What it does" column is the declaration's description: none may be left empty."""
    missing = [dotted for dotted, spec in leaves(HealthPolicy) if not spec.description]

    def sections(model: type[object], prefix: str = "") -> list[str]:
        found = []
        for item in declared(model):
            if isinstance(item.spec.kind, Section):
                if not item.spec.description:
                    found.append(prefix + item.name)
                found += sections(item.spec.kind.model, prefix + item.name + ".")
        return found

    missing += sections(HealthPolicy)
    assert not missing, f"describe these fields in operator/candor_operator/policy_model.py: {missing}"


def test_the_page_has_a_row_for_every_field_with_its_rules() -> None:
    page = policy_reference.render()
    for dotted, _ in leaves(HealthPolicy):
        assert f"\n| `{dotted}` |" in page, dotted
    (row,) = [line for line in page.splitlines() if line.startswith("| `queueTimeout` |")]
    assert "needs `maxConn`" in row and "10ms–5m" in row
