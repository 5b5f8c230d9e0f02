"""`Tracer.trace(counter, **labels)`: count a job's seconds while it runs, not only when it ends.

In-process: each traced counter child gets a hook on its sample method, so *any* scrape of *any*
registry first moves the in-flight seconds since the previous scrape into the counter (see series).
A trace that ends adds exactly its seconds since the last scrape, so the total over a job is the job's
duration, and overlapping traces with equal labels each count. Journal mode (CANDOR_STATE_DIR)
additionally records every trace in this process's journal for the sidecar (see journal_mode and
journal_writer).
"""

from __future__ import annotations

import collections
import functools
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter

from candor_tracer.heartbeat import HeartbeatThread
from candor_tracer.journal_mode import (
    DEFAULT_HEARTBEAT_INTERVAL,
    FROM_ENV,
    HEARTBEAT_ENV,
    STATE_DIR_ENV,
    UNRESOLVED,
    JournalMode,
    heartbeat_interval_from_env,
    tracers,
)
from candor_tracer.journal_writer import JournalWriter
from candor_tracer.series import InflightCollector, Series, install_flush_hook

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "HEARTBEAT_ENV", "STATE_DIR_ENV", "Trace", "Tracer"]

F = TypeVar("F", bound=Callable[..., Any])

_heartbeat_interval_from_env = heartbeat_interval_from_env  # its old home: tests import it from here


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


class Tracer(JournalMode):
    """Traces job seconds into prometheus_client Counters; journals them when a state directory is set.

    `state_dir` defaults to $CANDOR_STATE_DIR (read at the first trace); None forces in-process mode.
    `clock` serves in-process accounting; the journal always uses time.monotonic (shared by a node's
    containers). `registry`, when given, receives a gauge of in-flight traces per metric. `close()` and the
    journal slow paths are inherited from JournalMode.
    """

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic,
                 state_dir: str | os.PathLike[str] | object | None = FROM_ENV,
                 heartbeat_interval: float | None = None) -> None:
        # Reentrant, with a busy flag: a signal handler that traces or scrapes while this thread is inside
        # the lock must neither deadlock nor interleave with a half-done journal update (see _leave).
        self._lock = threading.RLock()
        self._busy = False
        # (series, token, time, is_start) of trace starts/ends made by signal handlers during a busy section
        self._deferred: collections.deque[tuple[Series, int, float, bool]] = collections.deque()
        self._late_slots: dict[int, int] = {}  # token -> journal slot of a trace whose start was deferred
        self._clock = clock
        self._monotonic_clock = clock is time.monotonic
        self._series: dict[tuple[int, tuple[tuple[str, Any], ...]], Series] = {}
        self._state_dir_setting = state_dir
        self._heartbeat_interval = heartbeat_interval
        self._mode = UNRESOLVED
        self._journal: JournalWriter | None = None
        self._heartbeat: HeartbeatThread | None = None
        self._warned: set[str] = set()
        tracers.add(self)
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
        journal = self._journal
        if journal is not None:
            journal.progress_at = time.monotonic()
        elif self._mode == UNRESOLVED:
            with self._exclusive() as alone:
                journal = self._ensure_journal() if alone else None
            if journal is not None:
                journal.progress_at = time.monotonic()

    def open_journal(self) -> Path | None:
        """Create this process's journal now rather than at the first trace (journal mode only).

        The event-loop watchdog uses it, so a stall is recorded even before anything was traced.
        """
        if self._mode == UNRESOLVED:
            with self._exclusive() as alone:
                if alone:
                    self._ensure_journal()
        return self.journal_path

    @property
    def journal_path(self) -> Path | None:
        """This process's journal, once created (None in in-process mode)."""
        journal = self._journal
        return journal.path if journal is not None else None

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
        with self._lock:
            canonical = (id(counter), tuple(zip(counter._labelnames, child._labelvalues, strict=False)))
            series = self._series.get(canonical)
            if series is None or series.counter is not counter or series.child is not child:
                series = Series(self, counter, child)
                install_flush_hook(child, series.flush)
                self._series[canonical] = series
            self._series[(id(counter), tuple(labels.items()))] = series
        return series
