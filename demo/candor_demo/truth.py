"""Ground truth: every worker appends its busy intervals to a file, so the demo compares Prometheus to real time.

One line per event, written with a single `os.write` on an O_APPEND descriptor (atomic for short lines, so
threads and processes of one instance can share the file):

    start <slot> <pid> <monotonic>
    end <slot> <pid> <monotonic>

A job whose `end` never comes (its process was SIGKILLed) is closed at the kill time the demo recorded.
All times are `time.monotonic()`, the clock the tracer journals with.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


class TruthWriter:
    """Appends start/end events of one instance's workers; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def start(self, slot: int, at: float | None = None) -> float:
        return self._write("start", slot, at)

    def end(self, slot: int, at: float | None = None) -> float:
        return self._write("end", slot, at)

    def _write(self, event: str, slot: int, at: float | None) -> float:
        moment = time.monotonic() if at is None else at
        line = f"{event} {slot} {os.getpid()} {moment:.6f}\n".encode()
        with self._lock:
            os.write(self._fd, line)
        return moment

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True)
class BusyInterval:
    slot: int
    pid: int
    start: float
    end: float | None  # None: still running when the file was read (or killed; see `close_open`)

    def overlap(self, begin: float, finish: float, now: float) -> float:
        """Busy seconds of this interval inside [begin, finish]; an open interval counts up to `now`."""
        stop = self.end if self.end is not None else now
        return max(0.0, min(stop, finish) - max(self.start, begin))


def read_intervals(path: str | os.PathLike[str]) -> list[BusyInterval]:
    """Pairs each `start` with the next `end` of the same (slot, pid); a torn last line is ignored."""
    open_jobs: dict[tuple[int, int], float] = {}
    intervals: list[BusyInterval] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        event, slot_text, pid_text, time_text = parts
        try:
            key = (int(slot_text), int(pid_text))
            moment = float(time_text)
        except ValueError:
            continue
        if event == "start":
            open_jobs[key] = moment
        elif event == "end" and key in open_jobs:
            intervals.append(BusyInterval(key[0], key[1], open_jobs.pop(key), moment))
    intervals.extend(BusyInterval(slot, pid, start, None) for (slot, pid), start in open_jobs.items())
    intervals.sort(key=lambda interval: interval.start)
    return intervals


def close_open(intervals: Iterable[BusyInterval], killed_at: Mapping[int, float]) -> list[BusyInterval]:
    """Closes the open intervals of killed processes (pid -> monotonic kill time)."""
    closed = []
    for interval in intervals:
        if interval.end is None and interval.pid in killed_at:
            interval = BusyInterval(interval.slot, interval.pid, interval.start, killed_at[interval.pid])
        closed.append(interval)
    return closed


def busy_seconds(intervals: Iterable[BusyInterval], begin: float, finish: float, now: float,
                 slot: int | None = None) -> float:
    """Worker-seconds of work done inside [begin, finish] (optionally for one worker slot)."""
    return sum(interval.overlap(begin, finish, now) for interval in intervals
               if slot is None or interval.slot == slot)
