"""A tracer's journal side: mode resolution, the journal writer and its heartbeat, the slow paths.

A tracer starts unresolved; its first trace (or heartbeat, or open_journal) picks journal mode when a state
directory is set and usable, in-process mode otherwise. A failing journal drops the tracer to in-process
mode, warning once. A forked child starts unresolved again, so it gets its own journal. Every method
marked "under the guard" is called with the tracer's Guard lock held and its busy section entered.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import weakref
from pathlib import Path
from typing import Protocol, cast

from candor_tracer.guard import Guard
from candor_tracer.heartbeat import HeartbeatThread
from candor_tracer.journal.writer import JournalFull, JournalWriter
from candor_tracer.modes import (
    FROM_ENV,
    IN_PROCESS,
    JOURNAL,
    UNRESOLVED,
    heartbeat_interval_from_env,
    log,
    trace_tokens,
)
from candor_tracer.pod_contract import STATE_DIR_ENV


class JournalSeries(Protocol):
    """What the journal needs of a traced series: its identity, and where it sits in which journal."""

    name: str
    documentation: str
    labels: tuple[tuple[str, str], ...]
    journal: JournalWriter | None
    jindex: int


class Journaling:
    """The journal of one tracer. `monotonic_clock`: the tracer's clock is time.monotonic, so its readings
    can go into the journal as they are (the journal always holds CLOCK_MONOTONIC times)."""

    def __init__(self, guard: Guard, state_dir: str | os.PathLike[str] | object | None,
                 heartbeat_interval: float | None, monotonic_clock: bool) -> None:
        self.guard = guard
        self.monotonic_clock = monotonic_clock
        self.mode = UNRESOLVED
        self.journal: JournalWriter | None = None
        self._state_dir_setting = state_dir
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat: HeartbeatThread | None = None
        self._late_slots: dict[int, int] = {}  # token -> journal slot of a trace whose start was deferred
        self._warned: set[str] = set()

    def journal_time(self, now: float) -> float:
        return now if self.monotonic_clock else time.monotonic()

    @property
    def has_late_slots(self) -> bool:
        return bool(self._late_slots)

    def close(self) -> None:
        """Stop journaling: final heartbeat, release the journal for the sidecar to fold."""
        with self.guard.lock:
            journal, heartbeat = self.journal, self._heartbeat
            self.journal, self._heartbeat = None, None
            self.mode = IN_PROCESS
        if heartbeat is not None:
            heartbeat.beat_now()
            heartbeat.stop()
        if journal is not None:
            journal.close()

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def ensure(self) -> JournalWriter | None:
        """Create the journal on first use (under the guard); fall back to in-process on failure."""
        if self.mode == JOURNAL:
            return self.journal
        if self.mode == IN_PROCESS:
            return None
        setting = self._state_dir_setting
        state_dir = os.environ.get(STATE_DIR_ENV) or None if setting is FROM_ENV else setting
        if state_dir is None:
            self.mode = IN_PROCESS
            return None
        try:
            journal = JournalWriter(Path(cast(str, state_dir)))
        except Exception as exc:
            self.mode = IN_PROCESS
            self._warn_once("state_dir", "candor: state directory %s is not usable (%s); tracing in-process only",
                            state_dir, exc)
            return None
        interval = self._heartbeat_interval or heartbeat_interval_from_env()
        try:
            self._heartbeat = HeartbeatThread(journal, interval)
        except Exception as exc:  # e.g. no threads left: the journal still works, the heartbeat is stale
            self._warn_once("heartbeat", "candor: cannot start the heartbeat thread: %s", exc)
        self.journal = journal
        self.mode = JOURNAL
        _close_at_exit(self)
        return journal

    def _failed(self, exc: BaseException) -> None:
        """A journal write failed (under the guard): keep counting in-process, say so once.

        The journal is released, so the sidecar folds what it holds (consistent up to the failure).
        """
        journal, heartbeat = self.journal, self._heartbeat
        self.journal, self._heartbeat = None, None
        self.mode = IN_PROCESS
        if heartbeat is not None:
            heartbeat.stop()
        if journal is not None and not journal.closed:
            self._warn_once("journal", "candor: journal %s failed (%s); tracing in-process only", journal.path, exc)
            journal.close()

    def start(self, series: JournalSeries, now: float) -> int:
        """A token for a new trace (under the guard): -1 - its journal slot, or a positive in-process token."""
        journal = self.journal
        if journal is not None and series.journal is journal:
            try:
                return -1 - journal.start(series.jindex, self.journal_time(now))
            except Exception:
                pass  # the path below retries and reports the problem
        try:
            journal = journal if self.mode == JOURNAL else self.ensure()
            if journal is not None:
                if series.journal is not journal:
                    series.jindex = journal.series_index(series.name, series.documentation, series.labels)
                    series.journal = journal
                return -1 - journal.start(series.jindex, self.journal_time(now))
        except JournalFull as exc:
            self._warn_once(f"full:{series.name}", "candor: %s; this trace is counted in-process only", exc)
        except Exception as exc:
            self._failed(exc)
        return next(trace_tokens)

    def start_late(self, series: JournalSeries, token: int, at: float) -> None:
        """Journal a start a signal handler made while busy (run by Guard.leave, under the guard)."""
        late = self.start(series, at)
        if late < 0:
            self._late_slots[token] = -1 - late

    def end(self, series: JournalSeries, token: int, now: float) -> None:
        """Record a trace end in the journal (under the guard)."""
        slot = -1 - token if token < 0 else self._late_slots.pop(token, -1)
        journal = self.journal
        if journal is None or slot < 0:
            return
        try:
            journal.end(slot, series.jindex, self.journal_time(now))
        except Exception as exc:
            self._failed(exc)

    def watch_note(self, loop_turned_at: float | None = None, stall: tuple[float, float] | None = None) -> None:
        """Event-loop watchdog figures for the next heartbeat; a stall is written at once."""
        journal = self.journal
        if journal is None:
            return
        if loop_turned_at is not None:
            journal.loop_turned_at = loop_turned_at
        if stall is not None:
            journal.stall_at, journal.stall_seconds = stall
            heartbeat = self._heartbeat
            if heartbeat is not None:
                heartbeat.beat_now()

    def after_fork_in_child(self) -> None:
        """A forked child gets its own journal (on its first trace); the parent's stays the parent's."""
        self._late_slots.clear()
        journal = self.journal
        self.journal, self._heartbeat = None, None
        if journal is not None:
            journal.abandon_after_fork()
        if self.mode == JOURNAL:
            self.mode = UNRESOLVED


# Every journaling tracer, closed at interpreter exit (weak: a dropped tracer needs no release).
_open: weakref.WeakSet[Journaling] = weakref.WeakSet()
_atexit_registered = False


def _close_all() -> None:
    for journaling in list(_open):
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing useful left to do
            journaling.close()


def _close_at_exit(journaling: Journaling) -> None:
    global _atexit_registered
    _open.add(journaling)
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_close_all)
