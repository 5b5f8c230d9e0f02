"""The journal's heartbeat: a daemon thread that proves the process alive and carries its memory and load
figures (the container's CPU counters, the process's declared capacity).

Beats fall on a fixed grid (start + k × interval), so the time a write takes never stretches the period
and a SIGKILL loses at most one interval of work. The memory figures come from this process's cgroup v2
unless the app chose another source with `set_memory_source`.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from candor_tracer.capacity import declared_capacity
from candor_tracer.cgroup import NO_FIGURES, MemoryFigures, MemoryReader, MemorySource
from candor_tracer.cpu import NO_CPU, CpuFigures, CpuReader
from candor_tracer.journal.format import LoadRecord
from candor_tracer.journal.writer import JournalWriter

log = logging.getLogger("candor_tracer")

# The app's memory source (None: the cgroup). A module global, not per tracer: every running heartbeat
# thread reads it at each beat, and a forked child inherits it with the rest of its memory.
_source: MemorySource | None = None
_source_warned = False


def set_memory_source(source: MemorySource | None) -> None:
    """Make every heartbeat of this process (and of children forked later) report `source()`'s figures.

    For apps whose "container" is not their cgroup, e.g. several instances on one host each given a
    memory limit of their own. None restores the default, the cgroup v2 figures (memory.current,
    memory.max, inactive_file). Takes effect at the next beat of heartbeats already running. `source` is
    called on the heartbeat thread about once per interval, so it must be quick; when it raises or returns
    something other than MemoryFigures, that beat carries no figures and the problem is logged once.
    """
    global _source, _source_warned
    if source is not None and not callable(source):
        raise TypeError(f"set_memory_source() takes a function returning MemoryFigures, or None; "
                        f"got {type(source).__name__}")
    _source = source
    _source_warned = False


def _warn_source_once(source: MemorySource, problem: str) -> None:
    global _source_warned
    if not _source_warned:
        _source_warned = True
        log.warning("candor: the memory source %r failed (%s); heartbeats carry no memory figures until it "
                    "works", source, problem)


def next_beat(previous: int, now_in_intervals: float) -> int:
    """The grid index of the beat after `previous`, given the time in intervals since the grid's start.

    Normally previous + 1 (due now if a little late). When that beat is more than an interval overdue
    (the process was stopped or starved), the missed beats are skipped: one beat now, then on the grid.
    """
    upcoming = previous + 1
    if now_in_intervals - upcoming > 1:
        return math.floor(now_in_intervals)
    return upcoming


class HeartbeatThread:
    """Beats once now, then every `interval` seconds until stopped.

    `cgroup` is the default memory source's reader, `cpu` the CPU counters' (tests point them at cgroup
    trees of their own).
    """

    def __init__(self, writer: JournalWriter, interval: float, cgroup: MemoryReader | None = None,
                 cpu: CpuReader | None = None) -> None:
        self._writer = writer
        self._interval = interval
        self._cgroup = cgroup
        self._cpu = cpu
        self._stop = threading.Event()
        self._warned = False
        self._origin = time.monotonic()
        self.beat_now()
        self._thread = threading.Thread(target=self._run, name="candor-heartbeat", daemon=True)
        self._thread.start()

    def memory(self) -> MemoryFigures:
        """The figures for a beat: never raises (a failing source gives NO_FIGURES)."""
        source = _source
        if source is None:
            try:
                if self._cgroup is None:
                    self._cgroup = MemoryReader()
                return self._cgroup.read()
            except Exception:  # a malformed cgroup file: no figures rather than no heartbeat
                return NO_FIGURES
        try:
            figures = source()
        except Exception as exc:
            _warn_source_once(source, f"{type(exc).__name__}: {exc}")
            return NO_FIGURES
        if not isinstance(figures, MemoryFigures):
            _warn_source_once(source, f"it returned {type(figures).__name__}, not MemoryFigures")
            return NO_FIGURES
        return figures

    def cpu(self) -> CpuFigures:
        """The container's CPU counters for a beat: never raises (unreadable files give NO_CPU)."""
        try:
            if self._cpu is None:
                self._cpu = CpuReader()
            return self._cpu.read()
        except Exception:  # a malformed cgroup file: no load figures rather than no heartbeat
            return NO_CPU

    def load(self) -> LoadRecord:
        cpu = self.cpu()
        return LoadRecord(seq=0, read_at=time.monotonic(), cpu_usage_ns=cpu.usage_ns, cpu_periods=cpu.periods,
                          cpu_throttled_periods=cpu.throttled_periods, cpu_throttled_ns=cpu.throttled_ns,
                          cpu_quota_cores=cpu.quota_cores, cpu_pressure_some=cpu.pressure_some,
                          online_cores=cpu.online_cores, cgroup=cpu.group, capacity=declared_capacity())

    def beat_now(self) -> None:
        try:
            self._writer.beat(self.memory(), load=self.load())
        except Exception as exc:  # the app must never notice: note it once, keep trying
            if not self._warned:
                self._warned = True
                log.warning("candor: cannot write the heartbeat to %s: %s", self._writer.path, exc)

    def _run(self) -> None:
        interval, origin = self._interval, self._origin
        beat = 0
        while True:
            beat = next_beat(beat, (time.monotonic() - origin) / interval)
            if self._stop.wait(max(0.0, origin + beat * interval - time.monotonic())):
                return
            self.beat_now()

    def stop(self) -> None:
        self._stop.set()
