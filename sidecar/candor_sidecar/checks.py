"""The health checks, computed from one journal snapshot plus the filesystem, off the request path.

Each result is one entry of draft-inadarei-api-health-check's `checks` map. A check without data says so
with `warn`: it never reports a pass it cannot see.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candor_sidecar.config import SidecarConfig
from candor_sidecar.load import LoadMeter
from candor_sidecar.load_weight import LoadDecision
from candor_sidecar.memory import MemoryReading, app_memory_limit, read_own_cgroup, read_visible_processes
from candor_sidecar.presence import AppAbsence

if TYPE_CHECKING:
    from candor_tracer.journal.reader import JournalSnapshot, WriterInfo

PASS, WARN, FAIL = "pass", "warn", "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class CheckResult:
    key: str  # "memory:utilization", "disk:utilization", "deadlock:heartbeat", ...
    status: str  # pass | warn | fail
    output: str  # what a human needs to know (always set; the HTTP layer omits it for pass)
    observed_value: float | None = None
    observed_unit: str | None = None
    component_id: str | None = None
    component_type: str = "system"
    reason: str = ""  # short form for the agent's `# ...` comment, e.g. "memory 91% > 80%"


def worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=PASS)


def _exceeds(name: str, percent: float, maximum: float) -> tuple[str, str]:
    """(status, reason) for a percentage against its threshold; fails at the threshold."""
    if percent >= maximum:
        return FAIL, f"{name} {percent:.0f}% {'>' if percent > maximum else '>='} {maximum:g}%"
    return PASS, ""


def _mib(size: int) -> str:
    return f"{size / 1048576:.0f}MiB"


# --- memory --------------------------------------------------------------------------------------------

def _journal_memory(writers: Sequence[WriterInfo], env_limit: int | None) -> MemoryReading | None:
    best: MemoryReading | None = None
    for writer in writers:
        if writer.memory_current is None:
            continue
        limit = writer.memory_max or env_limit
        working_set = max(writer.memory_current - (writer.inactive_file or 0), 0)
        reading = MemoryReading(working_set, limit, f"app journal (pid {writer.pid})")
        if best is None or (limit and (not best.limit or working_set / limit > best.working_set / best.limit)):
            best = reading
    return best


def memory_check(config: SidecarConfig, writers: Sequence[WriterInfo],
                 own_cgroup: Callable[[], MemoryReading | None] = read_own_cgroup) -> CheckResult:
    env_limit = app_memory_limit()
    readings: list[MemoryReading] = []
    from_journal = _journal_memory(writers, env_limit)
    if from_journal is not None:
        readings.append(from_journal)
    if (from_journal is None or from_journal.limit is None) and env_limit:
        visible = read_visible_processes(env_limit)
        if visible is not None:
            readings.append(visible)
    if not any(reading.limit for reading in readings):
        own = own_cgroup()
        if own is not None:
            readings.append(own)
    usable = next((reading for reading in readings if reading.limit), None)
    key = "memory:utilization"
    if usable is None or not usable.limit:
        seen = "; ".join(f"{_mib(r.working_set)} from {r.source}" for r in readings) or "no memory figures found"
        return CheckResult(key, WARN, f"no memory limit known ({seen})", reason="memory limit unknown")
    percent = 100.0 * usable.working_set / usable.limit
    status, reason = _exceeds("memory", percent, config.memory.max_percent)
    output = (f"working set {_mib(usable.working_set)} of {_mib(usable.limit)} limit ({percent:.1f}%, "
              f"fails at {config.memory.max_percent:g}%) from {usable.source}")
    return CheckResult(key, status, output, round(percent, 2), "percent", reason=reason)


# --- cpu -------------------------------------------------------------------------------------------------

def cpu_check(config: SidecarConfig, meter: LoadMeter | None) -> list[CheckResult]:
    """The app container's CPU load (ten-second average): warns from cpu.warnPercent, never fails.

    Busy is not sick: a pod at its CPU limit still answers, and failing it would move its load onto pods
    as busy as it. The load weights (agentCheck.weight) are what sends such a pod less. No entry when no
    app journal carries CPU counters (an older tracer, or no app yet: the deadlock check speaks then).
    """
    if meter is None or not meter.has_cpu:
        return []
    key = "cpu:utilization"
    detail, average = meter.last_cpu, meter.cpu_average
    if detail is None or average is None:
        return [CheckResult(key, PASS, "measuring: CPU load is the change between two app heartbeats")]
    warn_at = config.cpu.warn_percent
    busy = average >= warn_at
    output = f"CPU load {average:.0f}% over about 10s ({detail.describe()}; warns at {warn_at:g}%)"
    return [CheckResult(key, WARN if busy else PASS, output, round(average, 2), "percent",
                        reason=f"cpu {average:.0f}% >= {warn_at:g}%" if busy else "")]


def weight_check(decision: LoadDecision | None) -> list[CheckResult]:
    """The load factor of the agent's weight, as a check that always passes (shown with ?verbose)."""
    if decision is None:
        return []
    loads = ", ".join(f"{name} {load:.0f}%" for name, load in sorted(decision.loads.items())) or "not measured yet"
    if decision.figure is None:
        output = f"full weight: load within target (smoothed {loads})"
    else:
        output = (f"weight x{decision.factor}%: {decision.reason} ({decision.detail}); smoothed {loads}; "
                  f"changed {decision.changes} times")
    return [CheckResult("agent:weight", PASS, output, float(decision.factor), "percent", component_type="component")]


# --- disk ----------------------------------------------------------------------------------------------

def disk_checks(config: SidecarConfig) -> list[CheckResult]:
    results = []
    for path in config.disk.paths:
        key = "disk:utilization"
        try:
            stat = os.statvfs(path)
        except OSError as error:
            results.append(CheckResult(key, WARN, f"cannot statvfs {path}: {error.strerror}", component_id=path,
                                       reason=f"disk {path} unreadable"))
            continue
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        usable = used + stat.f_bavail * stat.f_frsize  # as df: space reserved for root does not count
        if usable <= 0:
            results.append(CheckResult(key, WARN, f"{path} reports no size", component_id=path,
                                       reason=f"disk {path} has no size"))
            continue
        percent = 100.0 * used / usable
        status, reason = _exceeds(f"disk {path}", percent, config.disk.max_percent)
        output = f"{path} {percent:.1f}% used of {_mib(usable)} (fails at {config.disk.max_percent:g}%)"
        results.append(CheckResult(key, status, output, round(percent, 2), "percent", component_id=path,
                                   reason=reason))
    return results


# --- deadlock ------------------------------------------------------------------------------------------

def _app_exited(absence: AppAbsence, now: float, wall_now: float, timeout: float) -> CheckResult:
    """No heartbeat at all because no app process is left: HAProxy must stop routing here.

    Only for `heartbeatTimeout`, the bound a stalled app gets too: a restarted app is seen from its first
    trace or heartbeat, and a request-driven app that never got traffic back would never trace.
    """
    if absence.since is not None:
        age = max(now - absence.since, 0.0)
        output = f"app process exited {age:.1f}s ago (no live journal writer)"
    else:  # this sidecar never saw it alive; the archive says an app journaled here
        age = max(wall_now - (absence.last_fold_wall or wall_now), 0.0)
        output = f"app process exited (no live journal writer; its journal was folded {age:.1f}s ago)"
    if age > timeout:
        return CheckResult("deadlock:heartbeat", WARN,
                           f"{output}; no new app process seen for over {timeout:g}s (not traced yet?)",
                           round(age, 3), "s", component_type="component", reason="no app heartbeat")
    return CheckResult("deadlock:heartbeat", FAIL, output, round(age, 3), "s", component_type="component",
                       reason="app exited")


def deadlock_checks(config: SidecarConfig, writers: Sequence[WriterInfo], now: float,
                    absence: AppAbsence | None = None, wall_now: float | None = None) -> list[CheckResult]:
    """Heartbeat age, oldest in-flight trace and recorded event-loop stalls, per live app process.

    Without a live writer: a failure when an app was here and has gone (`absence`) within the last
    heartbeatTimeout, else a warning.
    """
    timeout = config.deadlock.heartbeat_timeout
    if not writers:
        if absence is not None:
            return [_app_exited(absence, now, time.time() if wall_now is None else wall_now, timeout)]
        note = "no live app process writes a journal (not started yet, or not traced)"
        return [CheckResult("deadlock:heartbeat", WARN, note, component_type="component", reason="no app heartbeat")]
    results: list[CheckResult] = []
    for writer in writers:
        component = f"pid {writer.pid}"
        if writer.heartbeat is None:
            results.append(CheckResult("deadlock:heartbeat", WARN, f"{component} has not sent a heartbeat yet",
                                       component_id=component, component_type="component",
                                       reason="no app heartbeat"))
        else:
            age = max(now - writer.heartbeat, 0.0)
            failing = age > timeout
            results.append(CheckResult(
                "deadlock:heartbeat", FAIL if failing else PASS,
                f"{component}: last heartbeat {age:.1f}s ago (fails after {timeout:g}s)", round(age, 3), "s",
                component, "component", f"no heartbeat for {age:.1f}s > {timeout:g}s" if failing else ""))
        oldest = 0.0 if writer.oldest_inflight_start is None else max(now - writer.oldest_inflight_start, 0.0)
        limit = config.deadlock.max_job_duration
        too_long = oldest > limit
        results.append(CheckResult(
            "deadlock:jobDuration", FAIL if too_long else PASS,
            f"{component}: {writer.inflight} traces in flight, oldest {oldest:.1f}s (fails after {limit:g}s)",
            round(oldest, 3), "s", component, "component",
            f"job running {oldest:.0f}s > {limit:g}s" if too_long else ""))
        if writer.last_stall_at is not None:
            stalled = writer.last_stall_seconds or 0.0
            since = max(now - (writer.last_stall_at + stalled), 0.0)  # since the stall ended (0 while it lasts)
            recent = since <= timeout
            results.append(CheckResult(
                "deadlock:eventLoop", FAIL if recent else PASS,
                f"{component}: event loop stalled {stalled:.1f}s, ended {since:.1f}s ago (counts for {timeout:g}s)",
                round(stalled, 3), "s", component, "component",
                f"event loop stalled {stalled:.1f}s" if recent else ""))
    return results


SKIPPED_NAMED = 10  # skipped journal paths named in /health; the rest are counted


def journal_check(snapshot: JournalSnapshot | None, error: str | None) -> list[CheckResult]:
    if snapshot is None:
        return [CheckResult("journal:readable", WARN, f"journals unreadable: {error}", reason="journals unreadable")]
    if snapshot.skipped:
        # Named up to a bound: thousands of bad files must not make every /health answer megabytes long.
        named = ", ".join(snapshot.skipped[:SKIPPED_NAMED])
        more = len(snapshot.skipped) - SKIPPED_NAMED
        listed = named + (f" and {more} more" if more > 0 else "")
        return [CheckResult("journal:readable", WARN, f"skipped {len(snapshot.skipped)} corrupt journals: {listed}",
                            float(len(snapshot.skipped)), "files")]
    return []


def evaluate(config: SidecarConfig, snapshot: JournalSnapshot | None, error: str | None = None,
             now: float | None = None, absence: AppAbsence | None = None, meter: LoadMeter | None = None,
             load: LoadDecision | None = None) -> list[CheckResult]:
    """Every check once; `now` is time.monotonic() (the journal's clock). `meter` has read this evaluation's
    writers already; `load` is the weight's load factor decided from them (None: load weights are off)."""
    now = time.monotonic() if now is None else now
    writers = snapshot.writers if snapshot is not None else ()
    return [memory_check(config, writers), *cpu_check(config, meter), *disk_checks(config),
            *deadlock_checks(config, writers, now, absence), *journal_check(snapshot, error), *weight_check(load)]


@dataclass(frozen=True)
class Evaluation:
    """One background evaluation: what /health, /readyz and the agent answer from until the next one."""

    checks: tuple[CheckResult, ...]
    wall_time: float  # time.time(), for the `time` fields
    monotonic: float
    maintenance: bool
    snapshot: JournalSnapshot | None
    load: LoadDecision | None = None  # the load factor of the agent's weight (None: load weights are off)

    @property
    def status(self) -> str:
        return worst([check.status for check in self.checks])

    def failing(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == FAIL]
