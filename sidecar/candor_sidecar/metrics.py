"""/metrics: the journals' counters under the app's own names, plus Candor's gauges.

Every sample of a scrape comes from one snapshot, so from the same instant. A scrape serves what could
be read: a series that cannot be exposed (a name Prometheus refuses, a value that is not a number) is
left out and counted in `candor_metrics_skipped`, never a 500 for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candor_sidecar.checks import FAIL, PASS, WARN, Evaluation
from candor_sidecar.exposition import ExpositionError, Family, choose_format, encode

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
    connections_evicted: int = 0
    weight_reason: str = "full"  # what holds the weight below 100: cpu, occupancy, slowStart (full: nothing)


def app_counters(snapshot: JournalSnapshot) -> tuple[list[Family], int]:
    """The journals' series as counter families, and how many series could not be exposed."""
    families: dict[str, Family] = {}
    skipped = 0
    for series in snapshot.series:
        try:
            name = series.name[:-6] if series.name.endswith("_total") else series.name
            one = Family(name, series.documentation, "counter")
            one.add(float(series.value), series.labels)
            one.check()
        except (ExpositionError, TypeError, ValueError) as error:  # one bad series costs that series
            log.debug("series %r left out of /metrics: %s", series.name, error)
            skipped += 1
            continue
        family = families.setdefault(name, Family(name, series.documentation, "counter"))
        family.samples.extend(one.samples)
    return list(families.values()), skipped


def _gauge(name: str, documentation: str, value: float) -> Family:
    family = Family(name, documentation, "gauge")
    family.add(value)
    return family


def _counter(name: str, documentation: str, value: float) -> Family:
    family = Family(name, documentation, "counter")
    family.add(value)
    return family


def candor_families(snapshot: JournalSnapshot | None, facts: SidecarFacts, skipped: int) -> Iterator[Family]:
    """Candor's own gauges and counters (`skipped`: series of this scrape left out)."""
    yield _gauge("candor_journals_readable", "1 when this scrape could read the state directory.",
                 int(snapshot is not None))
    yield _gauge("candor_metrics_skipped", "Series left out of this scrape: they cannot be exposed.", skipped)
    yield _counter("candor_descriptor_exhaustions", "Times the sidecar ran out of file descriptors.",
                   facts.descriptor_exhaustions)
    yield _counter("candor_connections_refused", "Client connections dropped: over the connection budget.",
                   facts.connections_refused)
    yield _counter("candor_connections_evicted", "Idle client connections closed to make room for new ones.",
                   facts.connections_evicted)
    yield from _agent_and_checks(facts)
    if snapshot is None:
        return
    yield _gauge("candor_inflight_traces", "Traces in flight across the pod's live app processes.",
                 sum(writer.inflight for writer in snapshot.writers))
    yield _gauge("candor_app_processes", "Live app processes writing a trace journal.", len(snapshot.writers))
    yield _gauge("candor_journals_skipped", "Journal files skipped as corrupt or unreadable.", len(snapshot.skipped))
    if snapshot.last_fold is not None:
        yield _gauge("candor_last_fold_timestamp_seconds",
                     "Wall-clock time of the latest fold of a dead process's journal into the archive.",
                     snapshot.last_fold)


def _agent_and_checks(facts: SidecarFacts) -> Iterator[Family]:
    weight = Family("candor_agent_weight_percent",
                    "Weight the agent-check answers HAProxy with; reason: what holds it below 100 "
                    "(cpu, occupancy, slowStart) or full.", "gauge")
    weight.add(facts.weight_percent, [("reason", facts.weight_reason)])
    yield weight
    load = facts.evaluation.load if facts.evaluation is not None else None
    if load is not None:
        loads = Family("candor_load_percent", "The app's smoothed load per figure the weight follows "
                                              "(percent of saturation).", "gauge")
        for name, value in sorted(load.loads.items()):
            loads.add(value, [("figure", name)])
        yield loads
        yield _gauge("candor_load_factor_percent", "The load factor the agent multiplies its weight by.", load.factor)
        yield _counter("candor_load_weight_changes", "Times the load factor changed (HAProxy told a new weight).",
                       load.changes)
    agent = Family("candor_agent_state", "The word the agent-check answers (1 for the current one).", "gauge")
    for word in ("up", "down", "drain", "maint"):
        agent.add(1.0 if facts.agent_word == word else 0.0, [("state", word)])
    yield agent
    yield _counter("candor_agent_answers", "Agent-check connections answered since the sidecar started.",
                   facts.agent_answers)
    yield _gauge("candor_draining", "1 while the agent answers drain (the pod is terminating).", int(facts.draining))
    if facts.evaluation is not None:
        checks = Family("candor_check_status", "Health check states (1 for the current one).", "gauge")
        for check in facts.evaluation.checks:
            for status in (PASS, WARN, FAIL):
                checks.add(1.0 if check.status == status else 0.0,
                           [("check", check.key), ("component", check.component_id or ""), ("status", status)])
        yield checks
        yield _gauge("candor_last_evaluation_timestamp_seconds", "Wall-clock time of the latest background evaluation.",
                     facts.evaluation.wall_time)


def render_metrics(snapshot: JournalSnapshot | None, facts: SidecarFacts, accept: str,
                   more: Sequence[Family] = ()) -> tuple[bytes, str]:
    """(body, content type) negotiated from the Accept header; never raises for what the journals hold.
    `more`: further Candor families (the drains')."""
    openmetrics, content_type = choose_format(accept)
    counters, skipped = app_counters(snapshot) if snapshot is not None else ([], 0)
    return encode([*counters, *candor_families(snapshot, facts, skipped), *more], openmetrics), content_type
