"""The journal half of a Tracer: mode resolution, fallback warnings, deferred journal work, fork and exit.

A Tracer starts unresolved; its first trace (or heartbeat, or open_journal) picks journal mode when a state
directory is set and usable, in-process mode otherwise. A failing journal drops the tracer to in-process
mode, warning once. A forked child starts unresolved again, so it gets its own journal.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from candor_tracer.heartbeat import HeartbeatThread
from candor_tracer.journal_writer import JournalFull, JournalWriter

if TYPE_CHECKING:
    from candor_tracer.series import Series

log = logging.getLogger("candor_tracer")

STATE_DIR_ENV = "CANDOR_STATE_DIR"
HEARTBEAT_ENV = "CANDOR_HEARTBEAT_INTERVAL"
DEFAULT_HEARTBEAT_INTERVAL = 1.0

UNRESOLVED, JOURNAL, IN_PROCESS = 0, 1, 2
FROM_ENV = object()  # the state_dir default: read $CANDOR_STATE_DIR at the first trace
trace_tokens = itertools.count(1)  # next() is atomic under the GIL: no lock needed


def heartbeat_interval_from_env() -> float:
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


class JournalMode:
    """Tracer's journal state and slow paths; Tracer sets these attributes in its __init__."""

    _lock: threading.RLock
    _busy: bool
    _deferred: collections.deque[tuple[Series, int, float, bool]]
    _late_slots: dict[int, int]
    _monotonic_clock: bool
    _series: dict[tuple[int, tuple[tuple[str, Any], ...]], Series]
    _state_dir_setting: str | os.PathLike[str] | object | None
    _heartbeat_interval: float | None
    _mode: int
    _journal: JournalWriter | None
    _heartbeat: HeartbeatThread | None
    _warned: set[str]

    def close(self) -> None:
        """Stop journaling: final heartbeat, release the journal for the sidecar to fold."""
        with self._lock:
            journal, heartbeat = self._journal, self._heartbeat
            self._journal, self._heartbeat = None, None
            self._mode = IN_PROCESS
        if heartbeat is not None:
            heartbeat.beat_now()
            heartbeat.stop()
        if journal is not None:
            journal.close()

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _ensure_journal(self) -> JournalWriter | None:
        """Create the journal on first use (called under the lock); fall back to in-process on failure."""
        if self._mode == JOURNAL:
            return self._journal
        if self._mode == IN_PROCESS:
            return None
        setting = self._state_dir_setting
        state_dir = os.environ.get(STATE_DIR_ENV) or None if setting is FROM_ENV else setting
        if state_dir is None:
            self._mode = IN_PROCESS
            return None
        try:
            journal = JournalWriter(Path(cast(str, state_dir)))
        except Exception as exc:
            self._mode = IN_PROCESS
            self._warn_once("state_dir", "candor: state directory %s is not usable (%s); tracing in-process only",
                            state_dir, exc)
            return None
        interval = self._heartbeat_interval or heartbeat_interval_from_env()
        try:
            self._heartbeat = HeartbeatThread(journal, interval)
        except Exception as exc:  # e.g. no threads left: the journal still works, the heartbeat is stale
            self._warn_once("heartbeat", "candor: cannot start the heartbeat thread: %s", exc)
        self._journal = journal
        self._mode = JOURNAL
        _register_atexit()
        return journal

    def _journal_failed(self, exc: BaseException) -> None:
        """A journal write failed (called under the lock): keep counting in-process, say so once.

        The journal is released, so the sidecar folds what it holds (consistent up to the failure).
        """
        journal, heartbeat = self._journal, self._heartbeat
        self._journal, self._heartbeat = None, None
        self._mode = IN_PROCESS
        if heartbeat is not None:
            heartbeat.stop()
        if journal is not None and not journal.closed:
            self._warn_once("journal", "candor: journal %s failed (%s); tracing in-process only", journal.path, exc)
            journal.close()

    def _journal_start(self, series: Series, now: float) -> int:
        """A token for a new trace (called under the lock): its journal slot when there is a journal."""
        try:
            journal = self._journal if self._mode == JOURNAL else self._ensure_journal()
            if journal is not None:
                if series.journal is not journal:
                    series.jindex = journal.series_index(series.name, series.documentation, series.labels)
                    series.journal = journal
                return -1 - journal.start(series.jindex, now if self._monotonic_clock else time.monotonic())
        except JournalFull as exc:
            self._warn_once(f"full:{series.name}", "candor: %s; this trace is counted in-process only", exc)
        except Exception as exc:
            self._journal_failed(exc)
        return next(trace_tokens)

    def _journal_end(self, series: Series, token: int, now: float) -> None:
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
        if self._mode == JOURNAL:
            self._mode = UNRESOLVED
        for series in self._series.values():
            series.inflight.clear()
            series.journal = None

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing useful left to do
            self.close()


# Every live tracer, for the fork and exit hooks (weak: a dropped tracer needs no journal release).
tracers: weakref.WeakSet[JournalMode] = weakref.WeakSet()
_atexit_registered = False


def _after_fork_in_child() -> None:
    for tracer in list(tracers):
        tracer._after_fork_in_child()


def _at_exit() -> None:
    for tracer in list(tracers):
        tracer._at_exit()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_at_exit)


if hasattr(os, "register_at_fork"):  # absent on Windows, where there is no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
