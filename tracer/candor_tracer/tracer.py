"""`Tracer.trace(counter, **labels)`: count a job's seconds while it runs, not only when it ends.

In-process: each traced counter child gets a hook on its sample method, so *any* scrape of *any*
registry first moves the in-flight seconds since the previous scrape into the counter (see series).
A trace that ends adds exactly its seconds since the last scrape, so the total over a job is the job's
duration, and overlapping traces with equal labels each count. Journal mode (CANDOR_STATE_DIR)
additionally records every trace in this process's journal for the sidecar (see journaling and
journal.writer); guard holds the lock that serialises both.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from candor_tracer.guard import Guard
from candor_tracer.journaling import Journaling
from candor_tracer.modes import DEFAULT_HEARTBEAT_INTERVAL, FROM_ENV, HEARTBEAT_ENV, UNRESOLVED
from candor_tracer.pod_contract import STATE_DIR_ENV
from candor_tracer.series import Series, install_flush_hook

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "HEARTBEAT_ENV", "STATE_DIR_ENV", "Trace", "Tracer"]

F = TypeVar("F", bound=Callable[..., Any])


class Trace:
    """What `trace()` returns: a context manager (sync and async) and a decorator (sync and async)."""

    __slots__ = ("_nested", "_series", "_token")

    def __init__(self, series: Series) -> None:
        self._series = series
        self._token = 0  # 0: not entered (tokens are never 0)
        self._nested: list[int] | None = None  # outer tokens when the same object is re-entered

    def __enter__(self) -> Trace:
        token = self._series.start()
        if self._token:
            if self._nested is None:
                self._nested = []
            self._nested.append(self._token)
        self._token = token
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        token = self._token
        if token:
            self._token = self._nested.pop() if self._nested else 0
            self._series.stop(token)

    async def __aenter__(self) -> Trace:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        series = self._series
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                token = series.start()
                try:
                    return await async_fn(*args, **kwargs)
                finally:
                    series.stop(token)

            return cast(F, traced_async)

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            token = series.start()
            try:
                return fn(*args, **kwargs)
            finally:
                series.stop(token)

        return cast(F, traced)


class Tracer:
    """Traces job seconds into prometheus_client Counters; journals them when a state directory is set.

    `state_dir` defaults to $CANDOR_STATE_DIR (read at the first trace); None forces in-process mode.
    `clock` serves in-process accounting; the journal always uses time.monotonic (shared by a node's
    containers). `registry`, when given, receives a gauge of in-flight traces per metric.
    """

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic,
                 state_dir: str | os.PathLike[str] | object | None = FROM_ENV,
                 heartbeat_interval: float | None = None) -> None:
        self._guard = Guard()
        self._clock = clock
        self._journaling = Journaling(self._guard, state_dir, heartbeat_interval, clock is time.monotonic)
        self._series: dict[tuple[int, tuple[tuple[str, Any], ...]], Series] = {}
        _tracers.add(self)
        if registry is not None:
            registry.register(InflightCollector(self))

    # --- public ----------------------------------------------------------------------------

    def trace(self, counter: Counter, **labels: Any) -> Trace:
        """Trace a block or function into `counter` (labelled by `labels`). Wrong labels raise ValueError."""
        series = self._series.get((id(counter), tuple(labels.items())))
        if series is None or series.counter is not counter or (
                series.child_key and counter._metrics.get(series.child_key) is not series.child):
            series = self._new_series(counter, labels)  # first use, or the child was removed/cleared
        return Trace(series)

    def heartbeat(self) -> None:
        """Mark app progress (journal mode): the sidecar's deadlock check watches it once it is used."""
        journaling = self._journaling
        journal = journaling.journal
        if journal is None and journaling.mode == UNRESOLVED:
            with self._guard.section() as alone:
                journal = journaling.ensure() if alone else None
        if journal is not None:
            journal.progress_at = time.monotonic()

    def open_journal(self) -> Path | None:
        """Create this process's journal now rather than at the first trace (journal mode only).

        The event-loop watchdog uses it, so a stall is recorded even before anything was traced.
        """
        if self._journaling.mode == UNRESOLVED:
            with self._guard.section() as alone:
                if alone:
                    self._journaling.ensure()
        return self.journal_path

    @property
    def journal_path(self) -> Path | None:
        """This process's journal, once created (None in in-process mode)."""
        journal = self._journaling.journal
        return journal.path if journal is not None else None

    def close(self) -> None:
        """Stop journaling: final heartbeat, release the journal for the sidecar to fold."""
        self._journaling.close()

    def _watch_note(self, loop_turned_at: float | None = None, stall: tuple[float, float] | None = None) -> None:
        """Event-loop watchdog figures for the next heartbeat (see watchdog)."""
        self._journaling.watch_note(loop_turned_at, stall)

    # --- series ----------------------------------------------------------------------------

    def _new_series(self, counter: Counter, labels: dict[str, Any]) -> Series:
        if not isinstance(counter, Counter):
            raise TypeError(f"trace() needs a prometheus_client Counter, got {type(counter).__name__}")
        if counter._labelnames and not counter._labelvalues:
            child = counter.labels(**labels)  # raises ValueError naming wrong or missing labels
        elif labels:
            raise ValueError(f"counter {counter._name} has no label names, but trace() got labels {sorted(labels)}")
        else:
            child = counter
        with self._guard.lock:
            canonical = (id(counter), tuple(zip(counter._labelnames, child._labelvalues, strict=False)))
            series = self._series.get(canonical)
            if series is None or series.counter is not counter or series.child is not child:
                series = Series(self._guard, self._journaling, self._clock, counter, child)
                install_flush_hook(child, series.flush)
                self._series[canonical] = series
            self._series[(id(counter), tuple(labels.items()))] = series
        return series

    def _inflight_per_metric(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._guard.lock:
            for series in set(self._series.values()):
                counts[series.name] = counts.get(series.name, 0) + len(series.inflight)
        return counts

    def _after_fork_in_child(self) -> None:
        """A forked child gets its own journal (on its first trace); the parent's traces stay the parent's."""
        self._guard.reset_after_fork()
        self._journaling.after_fork_in_child()
        for series in self._series.values():
            series.forget_after_fork()


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
            for name, count in sorted(tracer._inflight_per_metric().items()):
                family.add_metric([name], count)
        return [family]


# Every live tracer, for the fork hook (weak: a dropped tracer needs nothing).
_tracers: weakref.WeakSet[Tracer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tracer in list(_tracers):
        tracer._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # absent on Windows, where there is no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
