"""/metrics: the journals' counters under the app's own names, plus Candor's gauges.

A fresh registry per scrape holds one collector over one snapshot, so every sample of a scrape comes
from the same instant; prometheus_client does the Prometheus-text / OpenMetrics negotiation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from candor_sidecar.checks import FAIL, PASS, WARN, Evaluation

if TYPE_CHECKING:
    from candor_tracer.journal import JournalSnapshot


@dataclass(frozen=True)
class SidecarFacts:
    """Candor's own state at scrape time."""

    evaluation: Evaluation | None
    weight_percent: int
    agent_word: str
    draining: bool
    agent_answers: int


class JournalCollector(Collector):
    def __init__(self, snapshot: JournalSnapshot, facts: SidecarFacts) -> None:
        self.snapshot = snapshot
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        yield from self._app_counters()
        yield from self._candor_gauges()

    def _app_counters(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for series in self.snapshot.series:
            name = series.name[:-6] if series.name.endswith("_total") else series.name
            family = families.get(name)
            if family is None:
                family = families[name] = Metric(name, series.documentation, "counter")
            family.add_sample(name + "_total", dict(series.labels), series.value)
        yield from families.values()

    def _candor_gauges(self) -> Iterator[Metric]:
        snapshot, facts = self.snapshot, self.facts
        yield GaugeMetricFamily("candor_inflight_traces", "Traces in flight across the pod's live app processes.",
                                value=sum(writer.inflight for writer in snapshot.writers))
        yield GaugeMetricFamily("candor_app_processes", "Live app processes writing a trace journal.",
                                value=len(snapshot.writers))
        yield GaugeMetricFamily("candor_journals_skipped", "Journal files skipped as corrupt or unreadable.",
                                value=len(snapshot.skipped))
        if snapshot.last_fold is not None:
            yield GaugeMetricFamily("candor_last_fold_timestamp_seconds",
                                    "Wall-clock time of the latest fold of a dead process's journal into the archive.",
                                    value=snapshot.last_fold)
        yield GaugeMetricFamily("candor_agent_weight_percent", "Weight the agent-check answers HAProxy with.",
                                value=facts.weight_percent)
        agent = GaugeMetricFamily("candor_agent_state", "The word the agent-check answers (1 for the current one).",
                                  labels=["state"])
        for word in ("up", "down", "drain", "maint"):
            agent.add_metric([word], 1.0 if facts.agent_word == word else 0.0)
        yield agent
        answers = Metric("candor_agent_answers", "Agent-check connections answered since the sidecar started.",
                         "counter")
        answers.add_sample("candor_agent_answers_total", {}, float(facts.agent_answers))
        yield answers
        yield GaugeMetricFamily("candor_draining", "1 once the sidecar received SIGTERM.", value=int(facts.draining))
        if facts.evaluation is not None:
            checks = GaugeMetricFamily("candor_check_status", "Health check states (1 for the current one).",
                                       labels=["check", "component", "status"])
            for check in facts.evaluation.checks:
                for status in (PASS, WARN, FAIL):
                    checks.add_metric([check.key, check.component_id or "", status],
                                      1.0 if check.status == status else 0.0)
            yield checks
            yield GaugeMetricFamily("candor_last_evaluation_timestamp_seconds",
                                    "Wall-clock time of the latest background evaluation.",
                                    value=facts.evaluation.wall_time)


def render_metrics(snapshot: JournalSnapshot, facts: SidecarFacts, accept: str) -> tuple[bytes, str]:
    """(body, content type) negotiated from the Accept header."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(snapshot, facts))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
