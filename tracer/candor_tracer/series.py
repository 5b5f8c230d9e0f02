"""One traced counter child: its in-flight traces, counted into the counter at every scrape.

Each traced child gets a hook on its sample method, so *any* scrape of *any* registry first folds the
in-flight seconds since the previous scrape into the counter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter

from candor_tracer.guard import Guard
from candor_tracer.journal.writer import JournalWriter
from candor_tracer.journaling import Journaling
from candor_tracer.modes import IN_PROCESS, trace_tokens

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

    __slots__ = ("__weakref__", "child", "child_key", "clock", "counter", "documentation", "guard", "inflight",
                 "jindex", "journal", "journaling", "labels", "name", "value")

    def __init__(self, guard: Guard, journaling: Journaling, clock: Callable[[], float], counter: Counter,
                 child: Counter) -> None:
        self.guard = guard
        self.journaling = journaling
        self.clock = clock
        self.counter = counter
        self.child = child
        self.value = child._value
        self.name: str = counter._name
        self.documentation: str = counter._documentation
        self.labels: tuple[tuple[str, str], ...] = tuple(zip(counter._labelnames, child._labelvalues, strict=True))
        # The child's key in a labelled parent's `_metrics`: () when the counter is unlabelled or a child itself.
        self.child_key: tuple[str, ...] = child._labelvalues if child is not counter else ()
        self.inflight: dict[int, float] = {}
        self.journal: JournalWriter | None = None  # the journal `jindex` belongs to
        self.jindex = -1

    def start(self) -> int:
        now = self.clock()
        journaling = self.journaling
        journal = journaling.journal
        if journal is None:
            if journaling.mode == IN_PROCESS:
                token = next(trace_tokens)
                self.inflight[token] = now  # atomic under the GIL; flush() iterates over a copy
                return token
        elif self.journal is journal:  # the usual journal case: a free slot, no lock
            try:
                slot = journal.start_free(self.jindex, journaling.journal_time(now))
            except Exception:
                slot = -1  # the locked path below retries and reports
            if slot >= 0:
                token = -1 - slot
                self.inflight[token] = now
                return token
        guard = self.guard
        with guard.lock:
            if not guard.enter():  # a signal handler mid-operation: journal it when the outer call ends
                token = next(trace_tokens)
                self.inflight[token] = now
                if journaling.mode != IN_PROCESS:  # journal mode, or its journal being created right now
                    guard.defer(functools.partial(journaling.start_late, self, token, now))
                return token
            try:
                token = journaling.start(self, now)  # first trace of this series or process, or no free slot
                self.inflight[token] = now
            finally:
                guard.leave()
        return token

    def stop(self, token: int) -> None:
        now = self.clock()
        guard = self.guard
        with guard.lock:
            last = self.inflight.pop(token, None)
            if last is None:  # a trace inherited across fork(): its seconds belong to the parent
                return
            if now > last:
                self.value.inc(now - last)
            else:  # a scrape after our clock read already counted up to `last`: the trace ended there
                now = last
            journaling = self.journaling
            if token >= 0 and not journaling.has_late_slots and not guard.deferred:
                return  # in-process only (no journal slot now, and none pending from a signal handler)
            if not guard.enter():  # a signal handler: the journal part waits for the outer call
                guard.defer(functools.partial(journaling.end, self, token, now))
                return
            try:
                journaling.end(self, token, now)
            finally:
                guard.leave()

    def flush(self) -> None:
        """Move in-flight seconds since the previous flush into the counter (called at each scrape)."""
        guard = self.guard
        with guard.lock:
            inflight = self.inflight
            if not inflight or not guard.enter():  # busy: a scrape from a signal handler shows the last flush
                return
            try:
                now = self.clock()
                total = 0.0
                for token in list(inflight):  # a copy: lock-free starts may add tokens meanwhile
                    last = inflight.get(token)
                    if last is not None and now > last:
                        total += now - last
                        inflight[token] = now
                if total > 0:
                    self.value.inc(total)
            finally:
                guard.leave()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's in-flight traces are the parent's."""
        self.inflight.clear()
        self.journal = None
