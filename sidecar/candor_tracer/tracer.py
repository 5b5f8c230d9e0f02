"""`Tracer.trace(counter, **labels)`: count a job's seconds while it runs, not only when it ends.

In-process: each traced counter child gets a hook on its sample method, so *any* scrape of *any*
registry first moves the in-flight seconds since the previous scrape into the counter. A trace that ends
adds exactly its seconds since the last scrape, so the total over a job is the job's duration, and
overlapping traces with equal labels each count. Journal mode (CANDOR_STATE_DIR) additionally records
every trace in this process's journal for the sidecar (see journal_writer).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import inspect
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from candor_tracer.heartbeat import HeartbeatThread
from candor_tracer.journal_writer import JournalFull, JournalWriter

log = logging.getLogger("candor_tracer")

F = TypeVar("F", bound=Callable[..., Any])

STATE_DIR_ENV = "CANDOR_STATE_DIR"
HEARTBEAT_ENV = "CANDOR_HEARTBEAT_INTERVAL"
DEFAULT_HEARTBEAT_INTERVAL = 1.0

_UNRESOLVED, _JOURNAL, _IN_PROCESS = 0, 1, 2
_FROM_ENV = object()
_tokens = itertools.count(1)  # next() is atomic under the GIL: no lock needed
_FLUSHERS = "_candor_flushers"


def _heartbeat_interval_from_env() -> float:
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None or raw == "":
        return DEFAULT_HEARTBEAT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0.01 <= value <= 3600):
        log.warning("candor: %s=%r is not a number of seconds in [0.01, 3600]; using %s",
                    HEARTBEAT_ENV, raw, DEFAULT_HEARTBEAT_INTERVAL)
        return DEFAULT_HEARTBEAT_INTERVAL
    return value


def _install_flush_hook(child: Counter, flush: Callable[[], None]) -> None:
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


class _Series:
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
            if tracer._mode == _IN_PROCESS:
                token = next(_tokens)
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
                token = next(_tokens)
                self.inflight[token] = now
                if tracer._mode != _IN_PROCESS:  # journal mode, or its journal being created right now
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


class Trace:
    """What `trace()` returns: a context manager (sync and async) and a decorator (sync and async)."""

    __slots__ = ("_nested", "_series", "_token")

    def __init__(self, series: _Series) -> None:
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


class _InflightCollector:
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


class Tracer:
    """Traces job seconds into prometheus_client Counters; journals them when a state directory is set.

    `state_dir` defaults to $CANDOR_STATE_DIR (read at the first trace); None forces in-process mode.
    `clock` serves in-process accounting; the journal always uses time.monotonic (shared by a node's
    containers). `registry`, when given, receives a gauge of in-flight traces per metric.
    """

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic,
                 state_dir: str | os.PathLike[str] | object | None = _FROM_ENV,
                 heartbeat_interval: float | None = None) -> None:
        # Reentrant, with a busy flag: a signal handler that traces or scrapes while this thread is inside
        # the lock must neither deadlock nor interleave with a half-done journal update (see _leave).
        self._lock = threading.RLock()
        self._busy = False
        # (series, token, time, is_start) of trace starts/ends made by signal handlers during a busy section
        self._deferred: collections.deque[tuple[_Series, int, float, bool]] = collections.deque()
        self._late_slots: dict[int, int] = {}  # token -> journal slot of a trace whose start was deferred
        self._clock = clock
        self._monotonic_clock = clock is time.monotonic
        self._series: dict[tuple[int, tuple[tuple[str, Any], ...]], _Series] = {}
        self._state_dir_setting = state_dir
        self._heartbeat_interval = heartbeat_interval
        self._mode = _UNRESOLVED
        self._journal: JournalWriter | None = None
        self._heartbeat: HeartbeatThread | None = None
        self._warned: set[str] = set()
        _tracers.add(self)
        if registry is not None:
            registry.register(_InflightCollector(self))

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
        journal = self._journal
        if journal is not None:
            journal.progress_at = time.monotonic()
        elif self._mode == _UNRESOLVED:
            with self._exclusive() as alone:
                journal = self._ensure_journal() if alone else None
            if journal is not None:
                journal.progress_at = time.monotonic()

    def open_journal(self) -> Path | None:
        """Create this process's journal now rather than at the first trace (journal mode only).

        The event-loop watchdog uses it, so a stall is recorded even before anything was traced.
        """
        if self._mode == _UNRESOLVED:
            with self._exclusive() as alone:
                if alone:
                    self._ensure_journal()
        return self.journal_path

    @property
    def journal_path(self) -> Path | None:
        """This process's journal, once created (None in in-process mode)."""
        journal = self._journal
        return journal.path if journal is not None else None

    def close(self) -> None:
        """Stop journaling: final heartbeat, release the journal for the sidecar to fold."""
        with self._lock:
            journal, heartbeat = self._journal, self._heartbeat
            self._journal, self._heartbeat = None, None
            self._mode = _IN_PROCESS
        if heartbeat is not None:
            heartbeat.beat_now()
            heartbeat.stop()
        if journal is not None:
            journal.close()

    # --- series ----------------------------------------------------------------------------

    def _new_series(self, counter: Counter, labels: dict[str, Any]) -> _Series:
        if not isinstance(counter, Counter):
            raise TypeError(f"trace() needs a prometheus_client Counter, got {type(counter).__name__}")
        if counter._labelnames and not counter._labelvalues:
            child = counter.labels(**labels)  # raises ValueError naming wrong or missing labels
        elif labels:
            raise ValueError(f"counter {counter._name} has no label names, but trace() got labels {sorted(labels)}")
        else:
            child = counter
        with self._lock:
            canonical = (id(counter), tuple(zip(counter._labelnames, child._labelvalues, strict=False)))
            series = self._series.get(canonical)
            if series is None or series.counter is not counter or series.child is not child:
                series = _Series(self, counter, child)
                _install_flush_hook(child, series.flush)
                self._series[canonical] = series
            self._series[(id(counter), tuple(labels.items()))] = series
        return series

    # --- journal ---------------------------------------------------------------------------

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _ensure_journal(self) -> JournalWriter | None:
        """Create the journal on first use (called under the lock); fall back to in-process on failure."""
        if self._mode == _JOURNAL:
            return self._journal
        if self._mode == _IN_PROCESS:
            return None
        setting = self._state_dir_setting
        state_dir = os.environ.get(STATE_DIR_ENV) or None if setting is _FROM_ENV else setting
        if state_dir is None:
            self._mode = _IN_PROCESS
            return None
        try:
            journal = JournalWriter(Path(cast(str, state_dir)))
        except Exception as exc:
            self._mode = _IN_PROCESS
            self._warn_once("state_dir", "candor: state directory %s is not usable (%s); tracing in-process only",
                            state_dir, exc)
            return None
        interval = self._heartbeat_interval or _heartbeat_interval_from_env()
        try:
            self._heartbeat = HeartbeatThread(journal, interval)
        except Exception as exc:  # e.g. no threads left: the journal still works, the heartbeat is stale
            self._warn_once("heartbeat", "candor: cannot start the heartbeat thread: %s", exc)
        self._journal = journal
        self._mode = _JOURNAL
        _register_atexit()
        return journal

    def _journal_failed(self, exc: BaseException) -> None:
        """A journal write failed (called under the lock): keep counting in-process, say so once.

        The journal is released, so the sidecar folds what it holds (consistent up to the failure).
        """
        journal, heartbeat = self._journal, self._heartbeat
        self._journal, self._heartbeat = None, None
        self._mode = _IN_PROCESS
        if heartbeat is not None:
            heartbeat.stop()
        if journal is not None and not journal.closed:
            self._warn_once("journal", "candor: journal %s failed (%s); tracing in-process only", journal.path, exc)
            journal.close()

    def _journal_start(self, series: _Series, now: float) -> int:
        """A token for a new trace (called under the lock): its journal slot when there is a journal."""
        try:
            journal = self._journal if self._mode == _JOURNAL else self._ensure_journal()
            if journal is not None:
                if series.journal is not journal:
                    series.jindex = journal.series_index(series.name, series.documentation, series.labels)
                    series.journal = journal
                return -1 - journal.start(series.jindex, now if self._monotonic_clock else time.monotonic())
        except JournalFull as exc:
            self._warn_once(f"full:{series.name}", "candor: %s; this trace is counted in-process only", exc)
        except Exception as exc:
            self._journal_failed(exc)
        return next(_tokens)

    def _journal_end(self, series: _Series, token: int, now: float) -> None:
        """Record a trace end in the journal (called under the lock, busy)."""
        slot = -1 - token if token < 0 else self._late_slots.pop(token, -1)
        journal = self._journal
        if journal is None or slot < 0:
            return
        try:
            journal.end(slot, series.jindex, now if self._monotonic_clock else time.monotonic())
        except Exception as exc:
            self._journal_failed(exc)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        """A busy section for the slow paths; yields False when re-entered from a signal handler."""
        with self._lock:
            if self._busy:
                yield False
                return
            self._busy = True
            try:
                yield True
            finally:
                self._leave()

    def _leave(self) -> None:
        """End a busy section (under the lock): first journal what signal handlers did meanwhile, in order."""
        deferred = self._deferred
        while deferred:
            series, token, at, is_start = deferred.popleft()
            if is_start:
                late = self._journal_start(series, at)
                if late < 0:
                    self._late_slots[token] = -1 - late
            else:
                self._journal_end(series, token, at)
        self._busy = False

    def _watch_note(self, loop_turned_at: float | None = None, stall: tuple[float, float] | None = None) -> None:
        """Event-loop watchdog figures for the next heartbeat; a stall is written at once."""
        journal = self._journal
        if journal is None:
            return
        if loop_turned_at is not None:
            journal.loop_turned_at = loop_turned_at
        if stall is not None:
            journal.stall_at, journal.stall_seconds = stall
            heartbeat = self._heartbeat
            if heartbeat is not None:
                heartbeat.beat_now()

    # --- fork and exit ---------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child gets its own journal (on its first trace); the parent's traces stay the parent's."""
        self._lock = threading.RLock()
        self._busy = False
        self._deferred.clear()
        self._late_slots.clear()
        journal = self._journal
        self._journal, self._heartbeat = None, None
        if journal is not None:
            journal.abandon_after_fork()
        if self._mode == _JOURNAL:
            self._mode = _UNRESOLVED
        for series in self._series.values():
            series.inflight.clear()
            series.journal = None

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing useful left to do
            self.close()


_tracers: weakref.WeakSet[Tracer] = weakref.WeakSet()
_atexit_registered = False


def _after_fork_in_child() -> None:
    for tracer in list(_tracers):
        tracer._after_fork_in_child()


def _at_exit() -> None:
    for tracer in list(_tracers):
        tracer._at_exit()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_at_exit)


if hasattr(os, "register_at_fork"):  # absent on Windows, where there is no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
