"""demo-report/report.md and the same table for the terminal."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path

from candor_demo.analysis import Figures, IntervalFigure
from candor_demo.scenario import RunRecord
from candor_demo.settings import MEMORY_LIMIT_BYTES

Row = tuple[str, str, str, str]  # figure, naive counter, Candor, truth / target
HEADER: Row = ("figure", "naive counter", "Candor", "truth / target")


def _seconds(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _errors(rows: Sequence[IntervalFigure], traced: bool) -> list[float]:
    values = [row.traced_error if traced else row.naive_error for row in rows]
    return [value for value in values if value is not None]


def table_rows(record: RunRecord, figures: Figures) -> list[Row]:
    rows: list[Row] = []
    for name, job_max in zip(record.instance_names, record.settings.job_max, strict=True):
        intervals = figures.intervals.get(name, [])
        naive, traced = _errors(intervals, False), _errors(intervals, True)
        bands = sorted((row.truth_high - row.truth_low) / max(row.truth, 1.0) for row in intervals
                       if row.truth_high is not None and row.truth_low is not None)
        known = f"; truth known to ±{_percent(bands[len(bands) // 2] / 2)} (median)" if bands else ""
        rows.append((f"{name} (jobs ≤ {job_max:g} s): busy-worker error per scrape, mean / worst",
                     f"{_percent(_mean(naive))} / {_percent(max(naive, default=None))}",
                     f"{_percent(_mean(traced))} / {_percent(max(traced, default=None))}",
                     f"≤ 2 % ({len(intervals)} intervals{known})"))
    for lost in (figures.sigkill, figures.sigterm):
        if lost is None:
            continue
        rows.append((f"{lost.what}: work seconds in Prometheus", _seconds(lost.naive), _seconds(lost.candor),
                     _seconds(lost.truth)))
        rows.append((f"{lost.what}: work seconds lost (truth − Prometheus)", _seconds(lost.naive_lost, 3),
                     _seconds(lost.candor_lost, 3), f"0 (in flight at the signal: {lost.in_flight:.2f} s)"))
        heartbeat = record.settings.heartbeat_interval
        rows.append((f"{lost.what}: … of which the signal cost (gap before it left out)", "—",
                     _seconds(lost.candor_lost_at_signal, 3), f"≤ one heartbeat ({heartbeat:g} s)"))
    rows.append(("resizer-2 memory > 80 %: agent answers down after", "—", _seconds(figures.agent_down_delay),
                 "—"))
    rows.append(("resizer-2 memory > 80 %: HAProxy stops routing to it after", "—", _seconds(figures.out_delay),
                 f"≤ agent-inter + 1 s ({record.settings.agent_interval} + 1 s)"))
    if figures.out_window is not None:
        start, end = figures.out_window
        rows.append(("resizer-2 out of rotation: seconds, requests it still answered", "—",
                     f"{end - start:.1f} s, {figures.served_while_out}", "0 requests"))
    ramp = figures.ramp_weights
    rows.append(("resizer-2 back: slow-start weights seen", "—",
                 (", ".join(map(str, ramp[:8])) + (" …" if len(ramp) > 8 else "")) if ramp else "none",
                 f"ramp over slowStart {record.settings.slow_start}"))
    rows.append(("resizer-2 back: seconds to full weight", "—", _seconds(figures.ramp_seconds, 1),
                 record.settings.slow_start))
    rows.extend(starve_rows(record, figures))
    term = record.term
    if term is not None and term.sidecar_term_at is not None:
        term_at: float = term.sidecar_term_at
        waited = None if term.sidecar_exit_at is None else term.sidecar_exit_at - term_at
        rows.append(("resizer-1 sidecar after SIGTERM: exit status, seconds until the final scrape let it go", "—",
                     f"{term.sidecar_status}, {_seconds(waited, 1)}",
                     f"0, ≤ finalScrapeTimeout {record.settings.final_scrape_timeout}"))
    if figures.drain_wait is not None and term is not None:
        rows.append(("resizer-1 deleted: its app's preStop hook held SIGTERM until HAProxy heard drain", "—",
                     f"{figures.drain_wait:.2f} s ({term.drain_outcome}; HAProxy: {term.haproxy_status_at_term})",
                     "≤ drain.maxWait, heard"))
        rows.append(("resizer-1 answers after its app's SIGTERM (in flight before it)", "—",
                     str(figures.served_after_sigterm), "in-flight ones only"))
    requests = record.requests
    if requests:
        rows.append(("requests through HAProxy: served / failed (failed from resizer-1's deletion on)", "—",
                     f"{len(requests) - (figures.failed_requests or 0)} / {figures.failed_requests} "
                     f"({figures.failed_while_leaving})", "failed: 0"))
        rows.append(("requests retried on a new connection: HAProxy closed a kept-alive one unanswered", "—",
                     str(figures.retried_requests or 0), "reported (a browser retries these too)"))
    return rows


def starve_rows(record: RunRecord, figures: Figures) -> list[Row]:
    starve = figures.starve
    if starve is None:
        return [("CPU-starved instance: load weights", "—", "skipped", record.starve_note or "not run")]

    def three(values: dict[str, float | None], shown: Callable[[float], str]) -> str:
        return " → ".join("n/a" if values[key] is None else shown(values[key] or 0.0)
                          for key in ("before", "starved", "after"))

    name = starve.instance
    return [
        (f"{name} CPU-starved: CPU used, before → starved → after", "—",
         three(starve.cpu_cores, lambda v: f"{v:.2f} cores"), f"limit {record.settings.starve_cores:g} cores"),
        (f"{name} CPU-starved: HAProxy's weight (mean)", "—", three(starve.weight, lambda v: f"{v:.0f}"),
         "lower while starved"),
        (f"{name} CPU-starved: its share of requests", "—", three(starve.share, lambda v: f"{100 * v:.1f} %"),
         "falls while starved, recovers"),
        (f"{name} CPU-starved: its requests' median duration", "—",
         three(starve.median_seconds, lambda v: f"{1000 * v:.0f} ms"), "—"),
    ]


def starve_section(record: RunRecord, figures: Figures) -> str:
    if figures.starve is None:
        return f"""## Load weights: a CPU-starved instance

Skipped on this run: {record.starve_note or "the phase did not run"}. The demo needs root and a cpu cgroup
controller to give each app a cgroup of its own (as its container would have) and to starve one."""
    starve = figures.starve
    settle = ", ".join(f"{label} {a - record.started:.0f}–{b - record.started:.0f} s"
                       for label, (a, b) in starve.windows.items())
    return f"""## Load weights: a CPU-starved instance gets less traffic

![load weights](load_weights.png)

Each app runs in a CPU cgroup of its own, as in its container, and the policy turns load weights on
(`agentCheck.weight`, from `cpu`, full weight up to 70 %, 10 % at saturation). From
{record.settings.starve_at:g} s to {record.settings.starve_end_at:g} s {starve.instance}'s CPU limit drops to
{record.settings.starve_cores:g} cores and a CPU hog runs in its cgroup: the tracer's heartbeat reports the
cgroup's usage and throttling, its sidecar's agent answers a lower weight, and HAProxy sends it less. Once the
hog stops and the limit is lifted, its weight and share come back. The check compares its share of the
requests over these windows (the first {3 * _agent_inter_seconds(record):g} s after each change left out): {settle}."""


def _agent_inter_seconds(record: RunRecord) -> float:
    from candor_sidecar.durations import parse_duration

    return parse_duration(record.settings.agent_interval, "agentCheck.interval")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Row]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    line = "  ".join("-" * width for width in widths)
    out = ["  ".join(cell.ljust(width) for cell, width in zip(HEADER, widths, strict=True)), line]
    out += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def checks_text(figures: Figures) -> str:
    return "\n".join(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.measured} (target {check.target})"
                     for check in figures.checks)


def haproxy_state_changes(log: str) -> list[str]:
    """HAProxy's own words for each server state change (its log, without the stderr duplicates); a line
    repeated right after itself is shown once with a count."""
    lines = [line.strip().replace("<3E>", ">") for line in log.splitlines()
             if line.startswith("Server ") and (" is " in line or " drain" in line)]
    collapsed: list[str] = []
    count = 0
    for index, line in enumerate(lines):
        count += 1
        if index + 1 == len(lines) or lines[index + 1] != line:
            collapsed.append(line if count == 1 else f"{line} (×{count})")
            count = 0
    return collapsed


def write_report(record: RunRecord, figures: Figures, directory: Path, charts: Sequence[Path]) -> Path:
    rows = table_rows(record, figures)
    settings = record.settings
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "Candor kept its promises" if figures.passed else "Candor MISSED at least one target"
    events = "\n".join(f"| {at - record.started:7.1f} s | {text} |" for at, text in record.events)
    config = record.haproxy_config
    backend = config[config.find("\nbackend "):].strip() if "\nbackend " in config else "(not recorded)"
    changes = "\n".join(f"    {line}" for line in haproxy_state_changes(record.haproxy_log)) or "    (none logged)"
    checks = "\n".join(f"| {'✅ pass' if c.passed else '❌ FAIL'} | {c.name} | {c.measured} | {c.target} |"
                       for c in figures.checks)
    peak, limit_mib = 100 * (record.memory_rss_peak or 0) / MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES // 2**20
    text = f"""# Candor demo report ({settings.name} run, {when})

**{verdict}.** Everything below was measured on this machine: three resizer app instances (ten workers each),
three `candor sidecar` processes, a real HAProxy configured from `candor render` of the demo HealthPolicy
(`healthpolicy.yaml` here), a real Prometheus scraping every {settings.scrape_interval:g} s, and a load
generator. The truth comes from the workers themselves: each appends its busy intervals to a file.

## Measured figures

{markdown_table(rows)}

## Self-checks (the demo exits non-zero when one fails)

| result | check | measured | target |
|---|---|---|---|
{checks}

## Busy workers, per job length

![busy workers](busy_workers.png)

Each panel is one instance with its own job-length setting. The naive counter adds a job's seconds when the job
ends, so with jobs longer than the scrape interval it shows silence and spikes; the traced counter includes the
seconds of jobs still running at each scrape and follows the truth.

## HAProxy: taken out before failing, brought back slowly

![haproxy](haproxy.png)

{starve_section(record, figures)}

## Work lost when a process dies

![lost work](lost_work.png)

- **SIGKILL**: instance 3 runs its workers as separate processes, so one worker is killed mid-job while the
  instance keeps running. The killed job's seconds never reach the naive counter. Candor's journal closes the
  job at the worker's last heartbeat (every {settings.heartbeat_interval:g} s), so it loses less than one heartbeat.
  Both are measured as (truth − the final value Prometheus holds) for that worker's series, whose counters start at 0
  and stop moving at the kill.
- **SIGTERM**: instance 1 is deleted as a pod with Candor's injected hooks would be. Both preStop hooks start
  together: the sidecar's (`candor sidecar drain`, over its control socket) makes the agent answer `drain`; the
  app's (`GET /drain/wait`) returns once HAProxy has read that answer. Only then does the app get SIGTERM: it
  finishes what it holds (its interrupted jobs end at the signal) on a server HAProxy sends nothing new to, and
  exits. Then its sidecar gets SIGTERM, keeps answering `drain`, folds the journals and keeps serving `/metrics`
  until Prometheus has scraped once more. The naive counter's last scrape was up to one interval before the
  exit, so everything since is lost.
- Failed requests are counted over the whole run, and from instance 1's deletion on. Without the handshake the
  app would exit while HAProxy still sends it requests (a native sidecar gets SIGTERM only once the app has
  exited, so its `drain` would come too late); with it, the target is 0. A connection refused anyway would be
  redispatched to another instance at once (`option redispatch 1` in the rendered backend).
- Candor's total gap (truth − Prometheus) also holds a small difference that was there before the signal: the
  workers' stopwatch reads the clock beside the tracer's own reads, and CPython may hand the GIL to another thread
  in between. The "signal cost" rows subtract the gap measured at the last scrape before the signal; the
  self-checks use them.

## How the figures are computed

- Busy workers in a scrape interval = (counter increase between two consecutive scrapes) ÷ (time between them),
  the value `rate()` approximates, computed from the raw samples. The truth is the busy worker-seconds from the
  truth files inside the same interval. Prometheus stamps a sample with the scrape's start and the sidecar reads
  the journals somewhere inside the scrape (`scrape_duration_seconds`, milliseconds usually): the truth is the band
  between the edges at the scrapes' starts and at their ends, and the error is the traced figure's distance from
  that band. Charts and the table show the truth with the edges at the scrapes' ends.
- The memory fault is real: instance 2 allocates and touches pages until its resident set is
  {peak:.0f} % of its {limit_mib} MiB limit. On this host the instances are plain processes, so each one's
  heartbeat reports its resident set size against `CANDOR_APP_MEMORY_LIMIT` where a pod would report its cgroup.
- HAProxy's state and weight are sampled from its stats socket every 0.1 s; Prometheus also scrapes HAProxy's
  built-in exporter (dots on the chart).

## What HAProxy ran: the backend rendered from the HealthPolicy

```
{backend}
```

## HAProxy's log: every server state change, with HAProxy's reason

{changes}

## Timeline

| at | event |
|---|---|
{events}

Re-run with `make demo` (or `candor demo --quick` for the one-minute version); see what the policy renders to
with `candor render -f demo-report/healthpolicy.yaml`.
"""
    path = directory / "report.md"
    path.write_text(text)
    return path
