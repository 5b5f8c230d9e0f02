"""The sidecar's own exposition, read back by prometheus_client's parsers (what Prometheus-compatible
scrapers accept) in both formats."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from candor_sidecar.exposition import (
    OPENMETRICS_TEXT,
    PROMETHEUS_TEXT,
    ExpositionError,
    Family,
    choose_format,
    encode,
)

AWKWARD = 'a "quoted" back\\slash\nand a newline, ünïcode'


def _families() -> list[Family]:
    jobs = Family("job_worked_seconds", f"Seconds {AWKWARD}", "counter")
    jobs.add(1.5, [("task", AWKWARD), ("queue", "")])
    jobs.add(1e300, [("task", "b"), ("queue", "slow")])
    jobs.add(math.inf, [("task", "c"), ("queue", "slow")])
    weight = Family("candor_agent_weight_percent", "Weight", "gauge")
    weight.add(40)
    odd = Family("candor_odd", "Odd gauge values", "gauge")
    odd.add(-math.inf, [("kind", "low")])
    odd.add(math.nan, [("kind", "unknown")])
    odd.add(-0.25, [("kind", "negative")])
    empty = Family("candor_nothing_yet", "A family with no samples", "gauge")
    return [jobs, weight, odd, empty]


def _as_dicts(parsed: object) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    return {family.name: (family.type, family.documentation,  # type: ignore[attr-defined]
                          [(s.name, s.labels, s.value) for s in family.samples])  # type: ignore[attr-defined]
            for family in parsed}  # type: ignore[attr-defined]


@pytest.mark.parametrize("openmetrics", [False, True], ids=["prometheus-text", "openmetrics"])
def test_both_formats_parse_back_to_the_same_families(openmetrics: bool) -> None:
    families = _families()
    for family in families:
        family.check()
    body = encode(families, openmetrics).decode()
    parsed = _as_dicts((parse_openmetrics if openmetrics else parse_text)(body))
    kind, documentation, samples = parsed["job_worked_seconds"]
    assert (kind, documentation) == ("counter", f"Seconds {AWKWARD}")
    assert samples[0] == ("job_worked_seconds_total", {"task": AWKWARD, "queue": ""}, 1.5)
    assert samples[1][2] == 1e300 and samples[2][2] == math.inf
    assert parsed["candor_agent_weight_percent"] == ("gauge", "Weight", [("candor_agent_weight_percent", {}, 40.0)])
    odd = {s[1]["kind"]: s[2] for s in parsed["candor_odd"][2]}
    assert odd["low"] == -math.inf and math.isnan(odd["unknown"]) and odd["negative"] == -0.25
    assert body.endswith("# EOF\n") == openmetrics


def test_accept_chooses_openmetrics_only_when_asked() -> None:
    assert choose_format("application/openmetrics-text; version=1.0.0,text/plain;q=0.5") == (True, OPENMETRICS_TEXT)
    assert choose_format("text/plain, */*") == (False, PROMETHEUS_TEXT)
    assert choose_format("") == (False, PROMETHEUS_TEXT)


@pytest.mark.parametrize(("family", "problem"), [
    (Family("9lives", "x", "counter"), "metric name"),
    (Family("ok", "x", "summary"), "type"),
    (Family("ok", "x", "gauge", []), None),
])
def test_a_family_the_formats_cannot_carry_is_refused_by_name(family: Family, problem: str | None) -> None:
    if problem is None:
        family.check()
        return
    with pytest.raises(ExpositionError, match=problem):
        family.check()


@pytest.mark.parametrize(("labels", "value", "problem"), [
    ([("__reserved", "a")], 1.0, "label name"),
    ([("has-dash", "a")], 1.0, "label name"),
    ([("task", "a"), ("task", "b")], 1.0, "twice"),
    ([("task", "\udcff")], 1.0, "UTF-8"),
    ([], -1.0, "counter cannot be"),
    ([], math.nan, "counter cannot be"),
])
def test_a_sample_the_formats_cannot_carry_is_refused_by_name(labels: list[tuple[str, str]], value: float,
                                                              problem: str) -> None:
    family = Family("job_seconds", "Seconds", "counter")
    family.add(value, labels)
    with pytest.raises(ExpositionError, match=problem):
        family.check()


@pytest.mark.parametrize("openmetrics", [False, True], ids=["prometheus-text", "openmetrics"])
def test_a_histogram_parses_back_cumulative_with_count_and_sum(openmetrics: bool) -> None:
    family = Family("candor_drain_seconds", "Drains", "histogram")
    family.add_histogram([0.5, 2.0], [1, 0, 2], 61.25, [("outcome", "heard")])
    family.add_histogram([0.5, 2.0], [0, 0, 0], 0.0, [("outcome", "timeout")])
    family.check()
    parsed = _as_dicts((parse_openmetrics if openmetrics else parse_text)(encode([family], openmetrics).decode()))
    kind, _, samples = parsed["candor_drain_seconds"]
    heard = {(name, labels.get("le")): value for name, labels, value in samples if labels["outcome"] == "heard"}
    assert kind == "histogram"
    assert heard == {("candor_drain_seconds_bucket", "0.5"): 1.0, ("candor_drain_seconds_bucket", "2.0"): 1.0,
                     ("candor_drain_seconds_bucket", "+Inf"): 3.0, ("candor_drain_seconds_count", None): 3.0,
                     ("candor_drain_seconds_sum", None): 61.25}


def test_a_histogram_sample_needs_its_suffix() -> None:
    family = Family("candor_drain_seconds", "Drains", "histogram")
    family.add(1.0)
    with pytest.raises(ExpositionError, match="suffix"):
        family.check()
