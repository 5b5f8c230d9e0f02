"""/metrics: the journals' counters under the app's own names, plus Candor's gauges.

A fresh registry per scrape holds one collector over one snapshot, so every sample of a scrape comes
from the same instant; prometheus_client does the Prometheus-text / OpenMetrics negotiation. A scrape
serves what could be read: a series that cannot be exposed (a name Prometheus refuses, a family that
fails to encode) is left out and counted in `candor_metrics_skipped`, never a 500 for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from candor_sidecar.checks import FAIL, PASS, WARN, Evaluation

if TYPE_CHECKING:
    from candor_tracer.journal.reader import JournalSnapshot

log = logging.getLogger("candor.sidecar")


@dataclass(frozen=True)
class SidecarFacts:
    """Candor's own state at scrape time."""

    evaluation: Evaluation | None
    weight_percent: int
    agent_word: str
    draining: bool
    agent_answers: int
    descriptor_exhaustions: int = 0
    connections_refused: int = 0


class _Collected(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def app_counters(snapshot: JournalSnapshot) -> tuple[list[Metric], int]:
    """The journals' series as counter families, and how many series could not be exposed."""
    families: dict[str, Metric] = {}
    skipped = 0
    for series in snapshot.series:
        try:
            name = series.name[:-6] if series.name.endswith("_total") else series.name
            family = families.get(name)
            if family is None:
                family = Metric(name, series.documentation, "counter")
            family.add_sample(name + "_total", dict(series.labels), float(series.value))
            families[name] = family
        except Exception as error:  # one bad series costs that series
            log.debug("series %r left out of /metrics: %s", series.name, error)
            skipped += 1
    return list(families.values()), skipped


class JournalCollector(Collector):
    """Candor's own gauges; with a snapshot (None: the journals could not be read) also the app's counters."""

    def __init__(self, snapshot: JournalSnapshot | None, facts: SidecarFacts) -> None:
        self.snapshot = snapshot
        self.facts = facts
        self.skipped = 0  # series or families left out of this scrape

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is not None:
            counters, self.skipped = app_counters(self.snapshot)
            yield from counters
        yield from self._candor_gauges()

    def _candor_gauges(self) -> Iterator[Metric]:
        snapshot, facts = self.snapshot, self.facts
        yield GaugeMetricFamily("candor_journals_readable", "1 when this scrape could read the state directory.",
                                value=int(snapshot is not None))
        yield GaugeMetricFamily("candor_metrics_skipped", "Series left out of this scrape: they cannot be exposed.",
                                value=self.skipped)
        descriptors = Metric("candor_descriptor_exhaustions", "Times the sidecar ran out of file descriptors.",
                             "counter")
        descriptors.add_sample("candor_descriptor_exhaustions_total", {}, float(facts.descriptor_exhaustions))
        yield descriptors
        refused = Metric("candor_connections_refused", "Client connections dropped: over the connection budget.",
                         "counter")
        refused.add_sample("candor_connections_refused_total", {}, float(facts.connections_refused))
        yield refused
        yield from self._agent_and_checks()
        if snapshot is None:
            return
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

    def _agent_and_checks(self) -> Iterator[Metric]:
        facts = self.facts
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
        yield GaugeMetricFamily("candor_draining", "1 while the agent answers drain (the pod is terminating).",
                                value=int(facts.draining))
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


def render_metrics(snapshot: JournalSnapshot | None, facts: SidecarFacts, accept: str) -> tuple[bytes, str]:
    """(body, content type) negotiated from the Accept header; never raises for what the journals hold."""
    encoder, content_type = choose_encoder(accept)
    collector = JournalCollector(snapshot, facts)
    metrics = list(collector.collect())
    kept: list[Metric] = []
    for metric in metrics:  # encode each family alone first: one that fails is left out, not the scrape
        single = CollectorRegistry(auto_describe=False)
        single.register(_Collected([metric]))
        try:
            encoder(single)
        except Exception as error:
            log.debug("metric family %r left out of /metrics: %s", metric.name, error)
            collector.skipped += 1
            continue
        kept.append(metric)
    if collector.skipped:  # the gauge was built before the count was known
        kept = [_skipped_gauge(collector.skipped) if metric.name == "candor_metrics_skipped" else metric
                for metric in kept]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(kept))
    return encoder(registry), content_type


def _skipped_gauge(count: int) -> Metric:
    return GaugeMetricFamily("candor_metrics_skipped", "Series left out of this scrape: they cannot be exposed.",
                             value=count)
