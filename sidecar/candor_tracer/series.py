"""In-process counting: each traced counter child gets a hook on its sample method, so *any* scrape of
*any* registry first folds the in-flight seconds since the previous scrape into the counter.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from candor_tracer.journal_mode import IN_PROCESS, trace_tokens
from candor_tracer.journal_writer import JournalWriter

if TYPE_CHECKING:
    from candor_tracer.tracer import Tracer

_FLUSHERS = "_candor_flushers"


def install_flush_hook(child: Counter, flush: Callable[[], None]) -> None:
    """Make every sampling of `child` (from any registry, any exposition) call `flush` first."""
    flushers: list[Callable[[], None]] | None = child.__dict__.get(_FLUSHERS)
    if flushers is None:
        flushers = []
        original = child._child_samples

        def sampled() -> Iterable[Any]:
            for f in flushers:
                f()
            return original()

        child.__dict__[_FLUSHERS] = flushers
        child.__dict__["_child_samples"] = sampled
    flushers.append(flush)


class Series:
    """One (counter child, tracer) and its in-flight traces.

    A token identifies an in-flight trace: -1 - slot for a trace with a journal slot, a positive number
    otherwise. `inflight` maps it to the time up to which its seconds are already in the counter.
    """

    __slots__ = ("__weakref__", "child", "child_key", "counter", "documentation", "inflight", "jindex", "journal",
                 "labels", "name", "tracer", "value")

    def __init__(self, tracer: Tracer, counter: Counter, child: Counter) -> None:
        self.tracer = tracer
        self.counter = counter
        self.child = child
        self.value = child._value
        self.name: str = counter._name
        self.documentation: str = counter._documentation
        self.labels: tuple[tuple[str, str], ...] = tuple(zip(counter._labelnames, child._labelvalues, strict=True))
        # The child's key in a labelled parent's `_metrics`: () when the counter is unlabelled or a child itself.
        self.child_key: tuple[str, ...] = child._labelvalues if child is not counter else ()
        self.inflight: dict[int, float] = {}
        self.journal: JournalWriter | None = None
        self.jindex = -1

    def start(self) -> int:
        tracer = self.tracer
        now = tracer._clock()
        journal = tracer._journal
        if journal is None:
            if tracer._mode == IN_PROCESS:
                token = next(trace_tokens)
                self.inflight[token] = now  # atomic under the GIL; flush() iterates over a copy
                return token
        elif self.journal is journal:  # the usual journal case: a free slot, no lock
            try:
                slot = journal.start_free(self.jindex, now if tracer._monotonic_clock else time.monotonic())
            except Exception:
                slot = -1  # the locked path below retries and reports
            if slot >= 0:
                token = -1 - slot
                self.inflight[token] = now
                return token
        with tracer._lock:
            if tracer._busy:  # re-entered from a signal handler mid-operation: journal it when the outer call ends
                token = next(trace_tokens)
                self.inflight[token] = now
                if tracer._mode != IN_PROCESS:  # journal mode, or its journal being created right now
                    tracer._deferred.append((self, token, now, True))
                return token
            tracer._busy = True
            try:
                if journal is not None and self.journal is journal and tracer._journal is journal:
                    try:
                        token = -1 - journal.start(self.jindex, now if tracer._monotonic_clock else time.monotonic())
                    except Exception:
                        token = tracer._journal_start(self, now)  # the slow path reports the problem
                else:
                    token = tracer._journal_start(self, now)  # first trace of this series, or of the process
                self.inflight[token] = now
            finally:
                if tracer._deferred:
                    tracer._leave()
                else:
                    tracer._busy = False
        return token

    def stop(self, token: int) -> None:
        tracer = self.tracer
        now = tracer._clock()
        with tracer._lock:
            last = self.inflight.pop(token, None)
            if last is None:  # a trace inherited across fork(): its seconds belong to the parent
                return
            if now > last:
                self.value.inc(now - last)
            else:  # a scrape after our clock read already counted up to `last`: the trace ended there
                now = last
            if token >= 0 and not tracer._late_slots and not tracer._deferred:
                return  # in-process only (no journal slot now, and none pending from a signal handler)
            if tracer._busy:  # re-entered from a signal handler: the journal part waits for the outer call
                tracer._deferred.append((self, token, now, False))
                return
            tracer._busy = True
            try:
                tracer._journal_end(self, token, now)
            finally:
                if tracer._deferred:
                    tracer._leave()
                else:
                    tracer._busy = False

    def flush(self) -> None:
        """Move in-flight seconds since the previous flush into the counter (called at each scrape)."""
        tracer = self.tracer
        with tracer._lock:
            inflight = self.inflight
            if not inflight or tracer._busy:  # busy: a scrape from a signal handler shows the last flush
                return
            tracer._busy = True
            try:
                now = tracer._clock()
                total = 0.0
                for token in list(inflight):  # a copy: lock-free starts may add tokens meanwhile
                    last = inflight.get(token)
                    if last is not None and now > last:
                        total += now - last
                        inflight[token] = now
                if total > 0:
                    self.value.inc(total)
            finally:
                if tracer._deferred:
                    tracer._leave()
                else:
                    tracer._busy = False


class InflightCollector:
    """`candor_tracer_inflight_traces{metric=...}`, registered when a Tracer is given a registry."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = weakref.ref(tracer)

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("candor_tracer_inflight_traces", "Traces in flight", labels=["metric"])]

    def collect(self) -> list[Metric]:
        family = GaugeMetricFamily("candor_tracer_inflight_traces", "Traces in flight", labels=["metric"])
        tracer = self._tracer()
        if tracer is not None:
            counts: dict[str, int] = {}
            with tracer._lock:
                for series in set(tracer._series.values()):
                    counts[series.name] = counts.get(series.name, 0) + len(series.inflight)
            for name, count in sorted(counts.items()):
                family.add_metric([name], count)
        return [family]
