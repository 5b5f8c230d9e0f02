"""/metrics bodies from a real journal written by the real tracer."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from candor_sidecar.checks import Evaluation, evaluate
from candor_sidecar.config import parse_config
from candor_sidecar.metrics import SidecarFacts, render_metrics
from candor_tracer import Tracer
from candor_tracer.journal.reader import read_totals


def test_journal_counters_keep_the_apps_name_help_and_labels(tmp_path: Path) -> None:
    tracer = Tracer(state_dir=tmp_path)
    counter = Counter("job_worked_seconds_total", "Seconds spent working on jobs", ["task", "queue"], registry=None)
    try:
        with tracer.trace(counter, task="resize", queue="fast"):
            time.sleep(0.05)
        running = tracer.trace(counter, task="mail", queue="slow")
        running.__enter__()
        time.sleep(0.05)
        snapshot = read_totals(tmp_path)
        checks = tuple(evaluate(parse_config({}), snapshot))
        facts = SidecarFacts(Evaluation(checks, time.time(), time.monotonic(), False, snapshot), 42, "up", False, 7)
        body, content_type = render_metrics(snapshot, facts, "text/plain")
        assert content_type.startswith("text/plain; version=0.0.4")
        families = {family.name: family for family in text_string_to_metric_families(body.decode())}
        jobs = families["job_worked_seconds"]
        assert jobs.type == "counter" and jobs.documentation == "Seconds spent working on jobs"
        values = {(s.labels["task"], s.labels["queue"]): s.value for s in jobs.samples if s.name.endswith("_total")}
        assert values[("resize", "fast")] >= 0.05
        assert values[("mail", "slow")] >= 0.05  # in flight, counted up to the scrape
        assert families["candor_inflight_traces"].samples[0].value == 1
        assert families["candor_agent_weight_percent"].samples[0].value == 42
        assert families["candor_agent_answers"].samples[0].value == 7
        openmetrics, kind = render_metrics(snapshot, facts, "application/openmetrics-text; version=1.0.0")
        assert kind.startswith("application/openmetrics-text") and openmetrics.endswith(b"# EOF\n")
        assert b"# TYPE job_worked_seconds counter" in openmetrics
        running.__exit__(None, None, None)
    finally:
        tracer.close()


def _sample(body: bytes, name: str) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name} in the scrape")


def test_a_series_that_cannot_be_exposed_is_left_out_and_counted_never_a_failed_scrape() -> None:
    from candor_tracer.journal.reader import JournalSnapshot, SeriesTotal

    good = SeriesTotal("job_seconds", "Seconds in jobs", (("task", "a"),), 1.5)
    # What a reader bug could hand over: labels that are not pairs, a value that is not a number.
    broken = [SeriesTotal("job_seconds", "x", (("task",),), 3.0),  # type: ignore[arg-type]
              SeriesTotal("other_seconds", "x", (), "many")]  # type: ignore[arg-type]
    snapshot = JournalSnapshot((good, *broken, SeriesTotal("huge", "h", (), 1e300)), (), (), None, time.monotonic())
    body, _ = render_metrics(snapshot, SidecarFacts(None, 100, "up", False, 0), "text/plain")
    assert _sample(body, "job_seconds_total") == 1.5
    assert _sample(body, "huge_total") == 1e300  # odd but exposable: Prometheus takes it
    assert _sample(body, "candor_metrics_skipped") == 2
    assert _sample(body, "candor_journals_readable") == 1


def test_without_a_readable_snapshot_the_scrape_still_has_candors_own_gauges() -> None:
    facts = SidecarFacts(None, 40, "down", False, 9, descriptor_exhaustions=2, connections_refused=5)
    body, _ = render_metrics(None, facts, "application/openmetrics-text")
    text = body.decode()
    assert "candor_journals_readable 0.0" in text and "candor_agent_answers_total 9.0" in text
    assert "candor_descriptor_exhaustions_total 2.0" in text and "candor_connections_refused_total 5.0" in text
    assert "candor_app_processes" not in text  # unknown, not zero
