"""From Prometheus' raw samples and the truth files to the demo's figures and self-checks.

Busy workers per scrape interval = increase of the job-seconds counter between two consecutive scrapes
divided by the time between them (what `rate()` shows, without its extrapolation). The truth is the
worker-seconds the truth files say were worked in the same interval. Prometheus stamps a sample with the
scrape's start, and the sidecar reads the journals somewhere inside the scrape (`scrape_duration_seconds`
long, milliseconds usually, more on a loaded machine): the truth is known to lie between its values with the
edges at the scrapes' starts and at their ends, and the traced figure is judged by its distance from that band.
Charts and tables show the truth with the edges at the scrapes' ends.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from candor_demo.prometheus_process import PrometheusProcess
from candor_demo.samplers import ServerSample
from candor_demo.scenario import RunRecord
from candor_demo.truth import BusyInterval, busy_seconds, close_open, read_intervals

COUNTER = "job_worked_seconds_total"
ACCURACY = 0.02  # traced busy workers within 2 % of the truth per scrape interval
# The tracer's heartbeat thread sleeps `interval` after each write, so its period is the interval plus the write
# (measured: 0.1004 s for 0.1 s); "one heartbeat" is the period, hence a 5 % allowance.
HEARTBEAT_SLACK = 1.05


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    samples: list[tuple[float, float]]  # (wall time, value)


@dataclass(frozen=True)
class IntervalFigure:
    start: float  # monotonic: the interval's edges, each at its scrape's end
    end: float
    truth: float  # busy workers between those edges
    traced: float | None
    naive: float | None
    # The sidecar read the journals somewhere inside each scrape: the truth lies between these two (edges at
    # the scrapes' starts or ends, whichever gives less / more work). Equal to `truth` without durations.
    truth_low: float | None = None
    truth_high: float | None = None

    def _error(self, value: float | None) -> float | None:
        """How far `value` lies outside the truth's band, relative to the truth (at least one worker, so an idle
        instance is not 0/0)."""
        if value is None:
            return None
        low = self.truth if self.truth_low is None else self.truth_low
        high = self.truth if self.truth_high is None else self.truth_high
        return max(0.0, low - value, value - high) / max(self.truth, 1.0)

    @property
    def traced_error(self) -> float | None:
        return self._error(self.traced)

    @property
    def naive_error(self) -> float | None:
        return self._error(self.naive)


@dataclass
class LostWork:
    """Work seconds of what a signal hit (one worker slot, or a whole instance), from its start to its end:
    done (truth) and the final value Prometheus holds for each counter. Counters start at 0 with the process,
    and nothing is worked after the signal, so truth − final is exactly what each method lost."""

    what: str
    truth: float
    candor: float | None
    naive: float | None
    in_flight: float  # truth: seconds of the jobs running when the signal came, up to the signal
    # truth − Candor at the last scrape before the signal: the per-job bookkeeping gap between the workers'
    # stopwatch and the tracer's clock reads (GIL hand-offs around the journal writes), not a loss.
    candor_gap_before: float | None = None

    @property
    def candor_lost(self) -> float | None:
        return None if self.candor is None else self.truth - self.candor

    @property
    def candor_lost_at_signal(self) -> float | None:
        """What the signal itself cost Candor: the final gap minus the gap that was there before it."""
        lost = self.candor_lost
        return None if lost is None else lost - (self.candor_gap_before or 0.0)

    @property
    def naive_lost(self) -> float | None:
        return None if self.naive is None else self.truth - self.naive


@dataclass
class StarveFigures:
    """The CPU-starved instance before, during and after: its share of the requests, HAProxy's weight of it,
    the CPU it used and how long its requests took (median). Windows: the `settle` seconds after each change
    are left out (the agent needs a few of its intervals to hear of it)."""

    instance: str
    windows: dict[str, tuple[float, float]]  # "before" / "starved" / "after" -> monotonic (start, end)
    share: dict[str, float | None]  # of the requests answered in the window
    weight: dict[str, float | None]  # HAProxy's mean weight of the instance in the window
    cpu_cores: dict[str, float | None]  # cores its cgroup used (mean over the window)
    median_seconds: dict[str, float | None]  # its requests' median duration
    lowest_weight: int | None  # HAProxy's lowest weight of it while starved


@dataclass
class Check:
    name: str
    passed: bool
    measured: str
    target: str


@dataclass
class Figures:
    intervals: dict[str, list[IntervalFigure]] = field(default_factory=dict)  # instance -> per scrape interval
    sigkill: LostWork | None = None
    sigterm: LostWork | None = None
    out_delay: float | None = None  # memory crossing -> HAProxy stops routing to instance 2
    agent_down_delay: float | None = None  # memory crossing -> the agent answers down
    ramp_weights: list[int] = field(default_factory=list)
    ramp_seconds: float | None = None
    out_window: tuple[float, float] | None = None  # monotonic: instance 2 out of rotation .. back in
    served_while_out: int | None = None  # requests instance 2 answered in that window (in-flight ones at most)
    failed_requests: int | None = None  # through HAProxy, the whole run
    failed_while_leaving: int | None = None  # from instance 1's deletion (its preStop hooks) to the end
    failure_causes: list[str] = field(default_factory=list)  # why those failed, each cause once
    retried_requests: int | None = None  # answered on a new connection after a kept-alive one closed unanswered
    drain_wait: float | None = None  # instance 1's deletion -> its app's SIGTERM (the app's preStop hook)
    served_after_sigterm: int | None = None  # requests instance 1 answered after its app's SIGTERM
    prometheus_haproxy: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # weight per server
    starve: StarveFigures | None = None
    checks: list[Check] = field(default_factory=list)
    # The raw samples behind the figures, per instance: traced and naive sums and scrape durations (wall time).
    raw: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


# --- Prometheus -------------------------------------------------------------------------------------------

def raw_series(prometheus: PrometheusProcess, selector: str, end_wall: float, window: float) -> list[Series]:
    """Every raw sample of `selector` in the `window` seconds up to `end_wall` (no step, no interpolation)."""
    result = prometheus.query(f"{selector}[{int(window) + 1}s]", at=end_wall)
    return [Series(dict(item["metric"]), [(float(t), float(v)) for t, v in item.get("values", [])])
            for item in result]


def summed_by_time(series: Iterable[Series]) -> list[tuple[float, float]]:
    """Sum over series per scrape timestamp; a series not yet created counts 0 (a counter that never moved)."""
    series = list(series)
    times = sorted({t for s in series for t, _ in s.samples})
    totals = []
    for moment in times:
        total = 0.0
        for one in series:
            earlier = [value for t, value in one.samples if t <= moment]
            total += earlier[-1] if earlier else 0.0
        totals.append((moment, total))
    return totals


def _by_instance(series: Iterable[Series], port_to_name: dict[str, str]) -> dict[str, list[Series]]:
    grouped: dict[str, list[Series]] = defaultdict(list)
    for one in series:
        name = port_to_name.get(one.labels.get("instance", "").rsplit(":", 1)[-1])
        if name is not None:
            grouped[name].append(one)
    return grouped


# --- figures ----------------------------------------------------------------------------------------------

def truth_intervals(record: RunRecord) -> dict[str, list[BusyInterval]]:
    killed = {record.kill.pid: record.kill.at} if record.kill else {}
    return {name: close_open(read_intervals(path), killed) for name, path in record.truth_files.items()}


def interval_figures(record: RunRecord, truth: Sequence[BusyInterval], traced: list[tuple[float, float]],
                     naive: list[tuple[float, float]], latency: dict[float, float]) -> list[IntervalFigure]:
    figures = []
    skip = record.settings.skip_first_scrapes
    naive_at = dict(naive)
    for (t0, v0), (t1, v1) in list(itertools.pairwise(traced))[skip:]:
        seconds = t1 - t0
        if seconds <= 0:
            continue
        begin, finish = record.mono(t0), record.mono(t1)
        start, end = begin + latency.get(t0, 0.0), finish + latency.get(t1, 0.0)

        def worked(a: float, b: float, seconds: float = seconds) -> float:
            return busy_seconds(truth, a, b, record.ended) / seconds

        naive_rate = None
        # The naive counter is scraped from another target at slightly different moments: take its samples
        # nearest to the interval's edges.
        n0, n1 = _nearest(naive, t0), _nearest(naive, t1)
        if n0 is not None and n1 is not None and n1[0] > n0[0]:
            naive_rate = (naive_at[n1[0]] - naive_at[n0[0]]) / (n1[0] - n0[0])
        figures.append(IntervalFigure(start, end, worked(start, end), (v1 - v0) / seconds, naive_rate,
                                      worked(start, finish), worked(begin, end)))
    return figures


def _nearest(samples: list[tuple[float, float]], moment: float) -> tuple[float, float] | None:
    if not samples:
        return None
    best = min(samples, key=lambda sample: abs(sample[0] - moment))
    return best if abs(best[0] - moment) < 1.0 + 0.5 * (samples[-1][0] - samples[0][0]) / max(len(samples), 1) \
        else None


def _last_value(series: Iterable[Series], worker: str | None = None) -> float | None:
    values = [one.samples[-1][1] for one in series if one.samples and (worker is None or
                                                                        one.labels.get("worker") == worker)]
    return sum(values) if values else None


def compute(record: RunRecord, prometheus: PrometheusProcess) -> Figures:
    figures = Figures()
    end_wall = record.wall(record.ended) + 1.0
    window = record.ended - record.launched + 30.0
    sidecar_ports = {str(ports["sidecar"]): name for name, ports in record.ports.items()}
    metrics_ports = {str(ports["metrics"]): name for name, ports in record.ports.items()}
    traced = _by_instance(raw_series(prometheus, f'{COUNTER}{{job="candor"}}', end_wall, window), sidecar_ports)
    naive = _by_instance(raw_series(prometheus, f'{COUNTER}{{job="naive"}}', end_wall, window), metrics_ports)
    durations = _by_instance(raw_series(prometheus, 'scrape_duration_seconds{job="candor"}', end_wall, window),
                             sidecar_ports)
    truth = truth_intervals(record)

    latencies: dict[str, dict[float, float]] = {}
    for name in record.instance_names:
        latency = latencies[name] = {t: v for one in durations.get(name, []) for t, v in one.samples}
        traced_sum, naive_sum = summed_by_time(traced.get(name, [])), summed_by_time(naive.get(name, []))
        figures.intervals[name] = interval_figures(record, truth.get(name, []), traced_sum, naive_sum, latency)
        figures.raw[name] = {"traced": traced_sum, "naive": naive_sum, "scrape_duration": sorted(latency.items())}

    if record.kill is not None:
        kill, worker = record.kill, str(record.kill.slot)
        slot_truth = [i for i in truth.get(kill.instance, []) if i.slot == kill.slot]
        slot_traced = [one for one in traced.get(kill.instance, []) if one.labels.get("worker") == worker]
        figures.sigkill = LostWork(
            f"SIGKILL {kill.instance} worker {kill.slot}", _total(slot_truth, record),
            _last_value(slot_traced), _last_value(naive.get(kill.instance, []), worker),
            kill.at - kill.job_started,
            _gap_before(record, slot_truth, summed_by_time(slot_traced), latencies[kill.instance], kill.at))
    if record.term is not None:
        term = record.term
        hit = truth.get(term.instance, [])
        figures.sigterm = LostWork(
            f"SIGTERM {term.instance}", _total(hit, record),
            _last_value(traced.get(term.instance, [])), _last_value(naive.get(term.instance, [])),
            sum(term.app_term_at - i.start for i in hit
                if i.start <= term.app_term_at and (i.end is None or i.end >= term.app_term_at)),
            _gap_before(record, hit, summed_by_time(traced.get(term.instance, [])), latencies[term.instance],
                        term.app_term_at))

    _haproxy_figures(record, figures)
    _request_figures(record, figures)
    figures.starve = starve_figures(record)
    figures.prometheus_haproxy = _prometheus_weights(prometheus, end_wall, window)
    figures.checks = self_checks(record, figures)
    return figures


def _gap_before(record: RunRecord, truth: Sequence[BusyInterval], counter: list[tuple[float, float]],
                latency: dict[float, float], signal_at: float) -> float | None:
    """truth − counter at the last scrape before `signal_at` (edges corrected as in interval_figures)."""
    before = [(t, v) for t, v in counter if record.mono(t) + latency.get(t, 0.0) < signal_at]
    if not before:
        return None
    moment, value = before[-1]
    edge = record.mono(moment) + latency.get(moment, 0.0)
    return busy_seconds(truth, float("-inf"), edge, record.ended) - value


def _total(intervals: Sequence[BusyInterval], record: RunRecord) -> float:
    return busy_seconds(intervals, float("-inf"), float("inf"), record.ended)


def _haproxy_figures(record: RunRecord, figures: Figures) -> None:
    victim = record.instance_names[1]
    crossed = record.memory_crossed_at
    mine = [s for s in record.haproxy_samples if s.server == victim]
    if crossed is not None:
        out = next((s for s in mine if s.at >= crossed and not s.in_rotation), None)
        figures.out_delay = None if out is None else out.at - crossed
        down = next((a for a in record.agent_samples
                     if a.server == victim and a.at >= crossed and a.answer.startswith("down")), None)
        figures.agent_down_delay = None if down is None else down.at - crossed
    if record.memory_freed_at is not None:
        after = [s for s in mine if s.at >= record.memory_freed_at and (record.kill is None or s.at < record.kill.at)]
        back = next((s for s in after if s.in_rotation), None)
        if back is not None and figures.out_delay is not None and crossed is not None:
            figures.out_window = (crossed + figures.out_delay, back.at)
            figures.served_while_out = sum(1 for r in record.requests
                                           if r.server == victim and figures.out_window[0] + 0.5 < r.at < back.at)
        if back is not None:
            weights: list[int] = []
            for sample in after:
                if sample.at >= back.at and sample.in_rotation and (not weights or sample.weight != weights[-1]):
                    weights.append(sample.weight)
            figures.ramp_weights = weights
            full = next((s for s in after if s.at >= back.at and s.weight >= _full_weight(mine)), None)
            figures.ramp_seconds = None if full is None else full.at - back.at


def _request_figures(record: RunRecord, figures: Figures) -> None:
    requests = record.requests
    if not requests:
        return
    figures.failed_requests = sum(1 for r in requests if r.status != 200)
    figures.retried_requests = sum(1 for r in requests if r.retried)
    term = record.term
    if term is None or term.deleted_at is None:
        return
    deleted_at = term.deleted_at
    leaving = [r for r in requests if r.status != 200 and r.at >= deleted_at]
    figures.failed_while_leaving = len(leaving)
    figures.failure_causes = sorted({r.error for r in leaving})
    figures.drain_wait = term.app_term_at - deleted_at
    # An answer that came back after the SIGTERM was sent before it, or HAProxy gave the app a new request.
    figures.served_after_sigterm = sum(1 for r in requests if r.server == term.instance and r.at > term.app_term_at)


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return values[len(values) // 2] if values else None


def starve_figures(record: RunRecord) -> StarveFigures | None:
    starve = record.starve
    if starve is None:
        return None
    settle = 3 * _agent_inter(record)
    ends = [record.term.deleted_at] if record.term is not None and record.term.deleted_at is not None else []
    after_end = min([*ends, record.started + record.settings.sigterm_at])
    windows = {"before": (starve.start - 5.0, starve.start), "starved": (starve.start + settle, starve.end),
               "after": (starve.end + settle, after_end)}
    name = starve.instance
    share: dict[str, float | None] = {}
    weight: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    median: dict[str, float | None] = {}
    for label, (start, end) in windows.items():
        answered = [r for r in record.requests if start <= r.at < end and r.status == 200]
        mine = [r for r in answered if r.server == name]
        share[label] = len(mine) / len(answered) if answered else None
        weights = [s.weight for s in record.haproxy_samples if s.server == name and start <= s.at < end]
        weight[label] = sum(weights) / len(weights) if weights else None
        used = [c for c in record.cpu_samples if c.server == name and start <= c.at < end]
        cpu[label] = (used[-1].used_seconds - used[0].used_seconds) / (used[-1].at - used[0].at) \
            if len(used) >= 2 and used[-1].at > used[0].at else None
        median[label] = _median([r.seconds for r in mine])
    lowest = min((s.weight for s in record.haproxy_samples
                  if s.server == name and starve.start <= s.at <= starve.end), default=None)
    return StarveFigures(name, windows, share, weight, cpu, median, lowest)


def _full_weight(samples: Sequence[ServerSample]) -> int:
    return max((s.weight for s in samples), default=100)


def _prometheus_weights(prometheus: PrometheusProcess, end_wall: float,
                        window: float) -> dict[str, list[tuple[float, float]]]:
    try:
        series = raw_series(prometheus, 'haproxy_server_weight{job="haproxy"}', end_wall, window)
    except Exception:  # the exporter's metric names are HAProxy's; a missing one must not sink the report
        return {}
    return {one.labels.get("server", "?"): one.samples for one in series}


# --- the self-checks ---------------------------------------------------------------------------------------

def _agent_inter(record: RunRecord) -> float:
    from candor_sidecar.durations import parse_duration

    return parse_duration(record.settings.agent_interval, "agentCheck.interval")


def self_checks(record: RunRecord, figures: Figures) -> list[Check]:
    checks = []
    worst: tuple[float, str] = (0.0, "")
    count = 0
    for name, rows in figures.intervals.items():
        for row in rows:
            if row.traced_error is None:
                continue
            count += 1
            if row.traced_error >= worst[0]:
                band = f"{row.truth_low:.2f}–{row.truth_high:.2f}" if row.truth_low is not None \
                    and row.truth_high is not None else f"{row.truth:.2f}"
                worst = (row.traced_error, f"{name} at {row.start - record.started:.0f} s: traced {row.traced:.2f}, "
                                           f"truth {band}")
    checks.append(Check("traced busy workers match the truth in every scrape interval",
                        count > 0 and worst[0] <= ACCURACY,
                        f"worst {100 * worst[0]:.2f} % over {count} intervals ({worst[1]})" if count else
                        "no intervals", f"≤ {100 * ACCURACY:.0f} %"))

    limit = _agent_inter(record) + 1.0
    checks.append(Check("HAProxy took resizer-2 out after its memory crossed 80 %",
                        figures.out_delay is not None and figures.out_delay <= limit,
                        "never" if figures.out_delay is None else f"{figures.out_delay:.2f} s after the crossing",
                        f"≤ agent-inter + 1 s = {limit:g} s"))

    heartbeat = record.settings.heartbeat_interval
    lost = figures.sigkill.candor_lost_at_signal if figures.sigkill else None
    checks.append(Check("work seconds Candor lost at the SIGKILL",
                        lost is not None and lost <= heartbeat * HEARTBEAT_SLACK,
                        "no measurement" if lost is None else f"{lost:.3f} s",
                        f"≤ one heartbeat = {heartbeat:g} s (period ≤ {heartbeat * HEARTBEAT_SLACK:g} s)"))

    ramp = [w for w in figures.ramp_weights if 0 < w < _full_weight(record.haproxy_samples)]
    rising = all(b >= a for a, b in zip(figures.ramp_weights, figures.ramp_weights[1:], strict=False))
    checks.append(Check("resizer-2 came back on a slow-start ramp",
                        len(ramp) >= 3 and rising,
                        f"weights {', '.join(map(str, figures.ramp_weights[:12]))}"
                        f"{' …' if len(figures.ramp_weights) > 12 else ''}" if figures.ramp_weights else "never back",
                        "≥ 3 rising weights between 0 and full"))

    term = record.term
    leaving = figures.failed_while_leaving
    checks.append(Check("no request failed while resizer-1 left: HAProxy heard drain before its app's SIGTERM",
                        term is not None and term.drain_outcome == "heard" and leaving == 0,
                        "no measurement" if term is None or leaving is None else
                        f"{leaving} failed; app hook {term.drain_outcome} after {figures.drain_wait or 0:.2f} s, "
                        f"HAProxy had it {term.haproxy_status_at_term or '?'} at the SIGTERM"
                        + (f"; {'; '.join(figures.failure_causes)}" if leaving else ""),
                        "0 failed, drain heard"))
    sigterm_lost = figures.sigterm.candor_lost_at_signal if figures.sigterm else None
    drained = term is not None and term.sidecar_status == 0 and sigterm_lost is not None \
        and abs(sigterm_lost) <= heartbeat * HEARTBEAT_SLACK
    checks.append(Check("SIGTERM: the sidecar drained, served the final scrape and exited 0",
                        drained,
                        "no measurement" if term is None else
                        f"exit {term.sidecar_status}, lost {sigterm_lost:.3f} s" if sigterm_lost is not None else
                        f"exit {term.sidecar_status}, no final value",
                        f"exit 0, lost ≤ {heartbeat:g} s"))
    if figures.starve is not None:
        checks.append(starve_check(figures.starve))
    return checks


STARVED_SHARE = 0.5  # while starved: at most half its share before
RECOVERED_SHARE = 0.7  # after: at least this much of its share before


def starve_check(starve: StarveFigures) -> Check:
    before, starved, after = (starve.share[key] for key in ("before", "starved", "after"))
    passed = before is not None and starved is not None and after is not None \
        and starved <= STARVED_SHARE * before and after >= RECOVERED_SHARE * before

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    return Check(f"{starve.instance}'s share of requests fell while CPU-starved and recovered after", passed,
                 f"{shown(before)} before, {shown(starved)} starved, {shown(after)} after "
                 f"(lowest weight {starve.lowest_weight})",
                 f"starved ≤ {STARVED_SHARE:g} × before, after ≥ {RECOVERED_SHARE:g} × before")
