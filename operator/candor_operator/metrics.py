"""The operator's own Prometheus metrics (kopf has none): reconciles, admissions, governed pods, the active replica,
the Drained Events it posts.

Everything lives in one registry of its own (`REGISTRY`), served by candor_operator.metrics_server. The
webhook and the handlers call the small `admission`/`reconciled` functions at their decision points,
so the metric objects and their label values stay in this one file.

The governed-pod figures come from the active replica's reconciles; a standby replica (paused by kopf
peering) reconciles nothing, so it exports none rather than figures that stop moving.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from candor_operator.pod_census import PodCensus
from candor_sidecar.drain.history import OUTCOMES
from candor_sidecar.release import VERSION

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Reconcile results: the policy's outcome (ready, conflict, invalid), "error" when the handler raised (kopf
# retries it), "skipped" when there was nothing to do (its namespace is being deleted).
RECONCILE_RESULTS = ("ready", "conflict", "invalid", "error", "skipped")
RECONCILES = Counter("candor_operator_reconciles", "HealthPolicy reconciles by result.", ["result"],
                     registry=REGISTRY)
RECONCILE_SECONDS = Histogram(
    "candor_operator_reconcile_duration_seconds", "Time one HealthPolicy reconcile took.", ["result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=REGISTRY)

# Admission decisions for pods: "injected", "skipped" (with why, a short fixed word), "error" (an unexpected
# failure: the pod was admitted unchanged).
SKIP_REASONS = ("system-namespace", "already-injected", "not-requested", "no-policy", "conflict", "invalid-pod")
ADMISSIONS = Counter("candor_operator_admissions", "Pod admission requests by decision.", ["decision", "reason"],
                     registry=REGISTRY)
ADMISSION_SECONDS = Histogram(
    "candor_operator_admission_duration_seconds", "Time from an admission request's arrival to its answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=REGISTRY)

ACTIVE = Gauge("candor_operator_active_replica",
               "1 when this replica is the active one (kopf peering), 0 while it stands by.", registry=REGISTRY)
UPGRADES_WAITING = Gauge(
    "candor_operator_sidecar_upgrades_waiting",
    "Governed Deployments (rollout: Automatic) whose pods run another sidecar release or image, waiting to be "
    "restarted one at a time.", registry=REGISTRY)
# Drained Events posted on governed pods: the drain's outcome (candor_sidecar.drain.history.OUTCOMES), or
# "unreadable" when the sidecar's termination message was not a drain summary (a DrainUnreadable Event).
DRAIN_EVENT_OUTCOMES = (*OUTCOMES, "unreadable")
DRAIN_EVENTS = Counter("candor_operator_drain_events", "Drained Events posted on governed pods, by how the drain "
                       "ended.", ["outcome"], registry=REGISTRY)
BUILD_INFO = Gauge("candor_operator_build_info", "Always 1; the labels say what runs.",
                   ["version", "kopf_version", "python_version", "sidecar_image"], registry=REGISTRY)

for _result in RECONCILE_RESULTS:  # every series exists from the start, so rate() and alerts see the first one
    RECONCILES.labels(_result)
for _reason in SKIP_REASONS:
    ADMISSIONS.labels("skipped", _reason)
ADMISSIONS.labels("injected", "")
ADMISSIONS.labels("error", "")
for _outcome in DRAIN_EVENT_OUTCOMES:
    DRAIN_EVENTS.labels(_outcome)


def admission(decision: str, reason: str = "") -> None:
    ADMISSIONS.labels(decision, reason).inc()


@contextmanager
def admission_timer() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        ADMISSION_SECONDS.observe(time.perf_counter() - started)


def drain_event(outcome: str) -> None:
    DRAIN_EVENTS.labels(outcome).inc()


def reconciled(result: str, seconds: float) -> None:
    RECONCILES.labels(result).inc()
    RECONCILE_SECONDS.labels(result).observe(seconds)


def build_info(sidecar_image: str) -> None:
    try:
        kopf_version = metadata.version("kopf")
    except metadata.PackageNotFoundError:
        kopf_version = "unknown"
    BUILD_INFO.clear()
    BUILD_INFO.labels(VERSION, kopf_version, platform.python_version(), sidecar_image).set(1)


class GovernedPods(Collector):
    """The last census of each policy's pods, exported only while this replica is the active one."""

    def __init__(self) -> None:
        self._census: dict[tuple[str, str], PodCensus] = {}
        self.active = False

    def record(self, namespace: str, policy: str, census: PodCensus | None) -> None:
        if census is None:
            return  # not counted this time: keep the last figures rather than invent zeros
        self._census[(namespace, policy)] = census

    def forget(self, namespace: str, policy: str) -> None:
        self._census.pop((namespace, policy), None)

    def set_active(self, active: bool) -> None:
        if self.active and not active:
            self._census.clear()  # a standby's figures would go stale; the next active replica counts afresh
            UPGRADES_WAITING.set(0)  # a standby restarts nothing; the active replica counts its own queue
        self.active = active
        ACTIVE.set(1 if active else 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace", "policy"]
        families = {
            "total": GaugeMetricFamily("candor_operator_governed_pods",
                                       "Pods a HealthPolicy's selector matches.", labels=labels),
            "without": GaugeMetricFamily("candor_operator_governed_pods_without_sidecar",
                                         "Governed pods running without the Candor sidecar.", labels=labels),
            "other": GaugeMetricFamily("candor_operator_governed_pods_other_sidecar_version",
                                       f"Governed pods whose sidecar another Candor release than {VERSION} injected.",
                                       labels=labels),
        }
        if self.active:
            for (namespace, policy), census in sorted(self._census.items()):
                families["total"].add_metric([namespace, policy], census.total)
                families["without"].add_metric([namespace, policy], census.without_sidecar)
                families["other"].add_metric([namespace, policy], census.other_version)
        yield from families.values()


GOVERNED = GovernedPods()
REGISTRY.register(GOVERNED)
