"""The app's load, from the journals' heartbeats: CPU (utilisation, throttling, pressure) and occupancy.

Heartbeats carry cumulative CPU counters; a figure is the change between two evaluations, so the meter
keeps the previous reading of each container (cgroup). Each figure is a percentage of saturation:

- cpu: the highest of utilisation (CPU time used ÷ the cores the container may use: its quota, else its
  CPUs), throttling (the share of CFS periods in which it hit its quota) and pressure (PSI `some avg10`:
  the share of time a task of the container waited for a CPU; a noisy neighbour shows there first);
- occupancy: busy workers against the capacity the app processes declared (see candor_tracer.capacity),
  averaged over the interval: the trace-seconds each process added since the previous evaluation (its
  journal's completed plus in-flight seconds), so requests far shorter than an evaluation still count.

A figure that cannot be computed this time (no load record, a first reading, counters that went back after
a container restart) is None: the weight does not move on what was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from candor_tracer.journal.reader import LoadRecord, WriterInfo


@dataclass(frozen=True)
class Figure:
    percent: float  # of saturation; may exceed 100 briefly (a quota's burst, rounding of periods)
    source: str  # the part that decided it: "utilisation", "throttling", "pressure", "occupancy"
    detail: str  # for humans: "0.45 of 0.50 cores", "7 of 8 workers busy"


@dataclass(frozen=True)
class CpuDetail:
    """One container's CPU over the last interval (each part None when not measurable)."""

    utilisation: float | None
    throttled: float | None
    pressure: float | None
    used_cores: float | None
    capacity_cores: float | None
    limited: bool  # the capacity is a quota (not the CPUs the container may run on)

    def figure(self) -> Figure | None:
        parts = [(value, name) for value, name in ((self.utilisation, "utilisation"), (self.throttled, "throttling"),
                                                   (self.pressure, "pressure")) if value is not None]
        if not parts:
            return None
        percent, source = max(parts)
        return Figure(percent, source, self.describe())

    def describe(self) -> str:
        words = []
        if self.utilisation is not None and self.used_cores is not None and self.capacity_cores is not None:
            of = "limit" if self.limited else "CPUs"
            words.append(f"{self.used_cores:.2f} of {self.capacity_cores:g} cores ({of}) used")
        if self.throttled is not None:
            words.append(f"throttled in {self.throttled:.0f}% of periods")
        if self.pressure is not None:
            words.append(f"pressure {self.pressure:.0f}%")
        return ", ".join(words) or "no CPU figures"


@dataclass(frozen=True)
class LoadReading:
    cpu: Figure | None
    occupancy: Figure | None

    def get(self, name: str) -> Figure | None:
        return self.cpu if name == "cpu" else self.occupancy if name == "occupancy" else None



def _rate(after: int | None, before: int | None) -> int | None:
    if after is None or before is None or after < before:  # counters reset: a new container
        return None
    return after - before


def cpu_detail(before: LoadRecord, after: LoadRecord) -> CpuDetail | None:
    """The CPU of one container between two of its readings; None when they cannot be compared."""
    elapsed = after.read_at - before.read_at
    if elapsed <= 0.05 or before.cgroup != after.cgroup:
        return None
    capacity = after.cpu_quota_cores or (float(after.online_cores) if after.online_cores else None)
    used = _rate(after.cpu_usage_ns, before.cpu_usage_ns)
    used_cores = None if used is None else used / 1e9 / elapsed
    utilisation = None if used_cores is None or not capacity else 100.0 * used_cores / capacity
    periods = _rate(after.cpu_periods, before.cpu_periods)
    throttled_periods = _rate(after.cpu_throttled_periods, before.cpu_throttled_periods)
    throttled = None
    if after.cpu_quota_cores is not None and periods and throttled_periods is not None:
        throttled = min(100.0, 100.0 * throttled_periods / periods)
    return CpuDetail(utilisation, throttled, after.cpu_pressure_some, used_cores, capacity,
                     after.cpu_quota_cores is not None)


def declared_capacity(writers: Sequence[WriterInfo]) -> int:
    return sum(w.load.capacity for w in writers if w.load is not None and w.load.capacity)


def occupancy(writers: Sequence[WriterInfo]) -> Figure | None:
    """In-flight traces of every live writer against the capacity the writers declared (pooled: an RQ horse's
    job fills the room its worker declared); None when no writer declared one. An instant's view: the
    meter averages over the interval (busy_occupancy) when it has a previous reading."""
    capacity = declared_capacity(writers)
    if not capacity:
        return None
    busy = min(sum(w.inflight for w in writers), capacity)
    return Figure(100.0 * busy / capacity, "occupancy", f"{busy} of {capacity} workers busy")


def busy_occupancy(writers: Sequence[WriterInfo], previous: dict[str, float], since: float,
                   now: float) -> Figure | None:
    """Workers busy on average between two evaluations (`since`, `now`), against the declared capacity.

    `previous` maps journals to their busy seconds at `since`. A journal created after `since` adds all its
    busy seconds; one seen before and not now (its process exited) adds nothing: its last moments are lost,
    which reads a little low, never high.
    """
    capacity = declared_capacity(writers)
    elapsed = now - since
    if not capacity or elapsed < 0.05:
        return None
    added = 0.0
    for writer in writers:
        if writer.busy_seconds is None:
            continue
        before = previous.get(writer.journal)
        if before is not None:
            added += max(writer.busy_seconds - before, 0.0)
        elif writer.created_at is not None and writer.created_at >= since:
            added += writer.busy_seconds
    busy = min(added / elapsed, float(capacity))  # nested traces count each: never more than every worker
    return Figure(100.0 * busy / capacity, "occupancy",
                  f"{busy:.1f} of {capacity} workers busy (average of the last {elapsed:.1f}s)")


CHECK_TIME_CONSTANT = 10.0  # seconds: the CPU check's average, as PSI's avg10 (one busy second is no warning)


class LoadMeter:
    """Turns each evaluation's writers into a LoadReading, remembering each container's previous reading.

    Also keeps, for the CPU check, the latest CPU detail and a ten-second average of the CPU figure.
    """

    def __init__(self) -> None:
        self._previous: dict[int, LoadRecord] = {}
        self.last_cpu: CpuDetail | None = None
        self.cpu_average: float | None = None
        self.has_cpu = False  # some live writer carries CPU counters
        self._average_at = 0.0
        self._busy: dict[str, float] = {}  # journal -> busy seconds at the previous read
        self._busy_at: float | None = None

    def read(self, writers: Sequence[WriterInfo], now: float | None = None) -> LoadReading:
        """This evaluation's figures; `now`: the monotonic time the writers were read at (the snapshot's), for
        the averaged occupancy (without it, occupancy is the instant's in-flight count)."""
        latest: dict[int, LoadRecord] = {}
        for writer in writers:
            record = writer.load
            if record is None or (record.cpu_usage_ns is None and record.cpu_pressure_some is None):
                continue
            if record.cgroup not in latest or record.read_at > latest[record.cgroup].read_at:
                latest[record.cgroup] = record
        details = []
        for group, record in latest.items():
            before = self._previous.get(group)
            if before is None or record.read_at > before.read_at:
                if before is not None:
                    detail = cpu_detail(before, record)
                    if detail is not None:
                        details.append(detail)
                self._previous[group] = record
        for group in list(self._previous):
            if group not in latest:  # that container has no live writer any more
                del self._previous[group]
        self.has_cpu = bool(latest)
        if not latest:
            self.last_cpu = self.cpu_average = None
        figures = [(figure, detail) for detail in details if (figure := detail.figure()) is not None]
        cpu = max(figures, key=lambda pair: pair[0].percent, default=None)
        if cpu is not None:
            self._average(cpu[0].percent, max(record.read_at for record in latest.values()))
            self.last_cpu = cpu[1]
        busy = occupancy(writers)
        if now is not None:
            # No baseline yet: the first average comes with the next evaluation.
            busy = busy_occupancy(writers, self._busy, self._busy_at, now) if self._busy_at is not None else None
            self._busy = {w.journal: w.busy_seconds for w in writers if w.busy_seconds is not None}
            self._busy_at = now
        return LoadReading(cpu[0] if cpu is not None else None, busy)

    def _average(self, percent: float, at: float) -> None:
        if self.cpu_average is None:
            self.cpu_average = percent
        else:
            alpha = 1.0 - math.exp(-max(at - self._average_at, 0.0) / CHECK_TIME_CONSTANT)
            self.cpu_average += alpha * (percent - self.cpu_average)
        self._average_at = at
