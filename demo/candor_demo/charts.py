"""The report's PNG charts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from candor_demo.analysis import Figures
from candor_demo.scenario import RunRecord

TRUTH, TRACED, NAIVE = "#222222", "#1f77b4", "#d62728"
STATUS_COLOURS = {"UP": "#d9f2d9", "DOWN": "#f8d0d0", "DRAIN": "#fde6c4", "MAINT": "#dddddd", "NOLB": "#fde6c4"}


def _events_for(record: RunRecord, instance: str) -> list[tuple[float, str]]:
    marks = []
    if instance == record.instance_names[1]:
        if record.memory_crossed_at is not None:
            marks.append((record.memory_crossed_at, "memory > 80 %"))
        if record.memory_freed_at is not None:
            marks.append((record.memory_freed_at, "memory freed"))
    if record.kill is not None and record.kill.instance == instance:
        marks.append((record.kill.at, f"SIGKILL worker {record.kill.slot}"))
    if record.term is not None and record.term.instance == instance:
        marks.append((record.term.app_term_at, "SIGTERM"))
    return [(at - record.started, label) for at, label in marks]


def _mark(ax: Axes, events: list[tuple[float, str]]) -> None:
    for at, label in events:
        ax.axvline(at, color="#888888", linestyle=":", linewidth=1)
        ax.annotate(label, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="#555555")


def busy_workers_chart(record: RunRecord, figures: Figures, path: Path) -> None:
    names = record.instance_names
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 3.2 * len(names)), sharex=True)
    for ax, name, job_max in zip(axes, names, record.settings.job_max, strict=True):
        rows = figures.intervals.get(name, [])
        if rows:
            edges = [rows[0].start - record.started] + [row.end - record.started for row in rows]
            ax.stairs([row.truth for row in rows], edges, color=TRUTH, linewidth=3, alpha=0.35,
                      label="truth (measured busy time)")
            ax.stairs([row.traced if row.traced is not None else float("nan") for row in rows], edges,
                      color=TRACED, linewidth=1.8, label="Candor: rate of the traced counter")
            ax.stairs([row.naive if row.naive is not None else float("nan") for row in rows], edges,
                      color=NAIVE, linewidth=1.4, linestyle="--", label="naive end-of-job counter")
        ax.set_title(f"{name}: ten workers, jobs of half-normal length up to {job_max:g} s", fontsize=10, loc="left")
        ax.set_ylabel("busy workers")
        top = max([row.truth for row in rows] + [row.naive or 0.0 for row in rows] + [10.0])
        ax.set_ylim(0, top * 1.3)  # room for the legend and the event labels
        ax.grid(alpha=0.3)
        _mark(ax, _events_for(record, name))
    axes[0].legend(loc="upper left", fontsize=8, ncol=3)
    axes[-1].set_xlabel(f"seconds since the script's start (Prometheus scrapes every "
                        f"{record.settings.scrape_interval:g} s)")
    fig.suptitle("Busy workers per scrape interval: what Prometheus sees vs what the workers did", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def haproxy_chart(record: RunRecord, figures: Figures, path: Path) -> None:
    names = record.instance_names
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(11, 2.6 * (len(names) + 1)), sharex=True)
    for ax, name in zip(axes, names, strict=False):
        samples = [s for s in record.haproxy_samples if s.server == name]
        times = [s.at - record.started for s in samples]
        # Background: HAProxy's status, one span per run of equal status.
        start = 0
        for index in range(1, len(samples) + 1):
            if index == len(samples) or samples[index].base_status != samples[start].base_status:
                colour = STATUS_COLOURS.get(samples[start].base_status, "#ffffff")
                end = times[index] if index < len(samples) else times[-1]
                ax.axvspan(times[start], end, color=colour, linewidth=0)
                start = index
        ax.step(times, [s.weight for s in samples], where="post", color="#333333", linewidth=1.5,
                label="weight (stats socket, every 0.1 s)")
        promex = figures.prometheus_haproxy.get(name, [])
        if promex:
            ax.plot([record.mono(t) - record.started for t, _ in promex], [v for _, v in promex], "o",
                    color=TRACED, markersize=4, label="weight in Prometheus (HAProxy exporter)")
        ax.set_ylim(-5, 110)
        ax.set_ylabel("weight")
        ax.set_title(f"{name}  (green UP, red DOWN, orange DRAIN)", fontsize=10, loc="left")
        _mark(ax, _events_for(record, name))
    axes[0].legend(loc="lower left", fontsize=8)
    ax = axes[-1]
    per_second: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for result in record.requests:
        per_second[result.server or "error"][math.floor(result.at - record.started)] += 1
    if record.requests:
        first = math.floor(min(r.at for r in record.requests) - record.started)
        last = math.floor(max(r.at for r in record.requests) - record.started)
        seconds = list(range(first, last + 1))
        for name in [*names, "error"]:
            counts = per_second.get(name)
            if counts:  # seconds without an answer from an instance are zeros, not gaps
                ax.step(seconds, [counts.get(s, 0) for s in seconds], where="post", label=name, linewidth=1.2,
                        color="#d62728" if name == "error" else None)
    ax.set_ylabel("requests / s")
    ax.set_title("requests served per instance (load generator through HAProxy)", fontsize=10, loc="left")
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    ax.set_xlabel("seconds since the script's start")
    for each in axes:
        each.grid(alpha=0.3)
    fig.suptitle("HAProxy: server state and weight (agent-check answers from the Candor sidecars)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lost_work_chart(figures: Figures, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    groups = [lost for lost in (figures.sigkill, figures.sigterm) if lost is not None]
    width = 0.26
    for index, lost in enumerate(groups):
        bars = [("in flight at the signal (truth)", lost.in_flight, TRUTH),
                ("lost by the naive counter", lost.naive_lost, NAIVE),
                ("lost by Candor", lost.candor_lost, TRACED)]
        for offset, (label, value, colour) in enumerate(bars):
            x = index + (offset - 1) * width
            shown = max(value or 0.0, 0.0)
            ax.bar(x, shown, width, color=colour, alpha=0.35 if colour == TRUTH else 0.9,
                   label=label if index == 0 else None)
            text = "n/a" if value is None else f"{value:.2f} s"
            if colour == TRACED and lost.candor_lost_at_signal is not None:
                # The rest was there before the signal: clock reads beside the tracer's, not lost work.
                text += f"\n(signal: {lost.candor_lost_at_signal:.3f} s)"
            ax.annotate(text, (x, shown), ha="center", va="bottom", fontsize=9, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(groups)), [lost.what for lost in groups])
    ax.set_ylabel("work seconds")
    ax.set_title("Work seconds Prometheus never sees when a process dies", fontsize=12)
    ax.legend(fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _agent_percent(answer: str) -> float | None:
    """The weight in an agent answer ("up 40% maxconn:30 # cpu saturated" -> 40), None without one."""
    for word in answer.split("#", 1)[0].split():
        if word.endswith("%") and word[:-1].isdigit():
            return float(word[:-1])
    return None


def load_weights_chart(record: RunRecord, figures: Figures, path: Path) -> None:
    """The starved instance: its CPU, its weight (agent and HAProxy) and its share of the requests, over time."""
    starve = record.starve
    assert starve is not None
    name = starve.instance
    start, end = starve.start - 8.0, (record.term.deleted_at if record.term and record.term.deleted_at
                                      else record.ended)
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)

    def x(at: float) -> float:
        return at - record.started

    for ax in axes:
        ax.axvspan(x(starve.start), x(starve.end), color="#f8d0d0", linewidth=0, alpha=0.6)
        ax.grid(alpha=0.3)
    axes[0].annotate(f"CPU-starved: limit {starve.cores:g} cores + a CPU hog in its cgroup", (x(starve.start), 1.0),
                     xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=8,
                     color="#993333")

    ax = axes[0]
    for server in record.instance_names:
        used = [c for c in record.cpu_samples if c.server == server and start <= c.at <= end]
        pairs = list(itertools.pairwise(used))
        ax.plot([x(b.at) for _, b in pairs], [(b.used_seconds - a.used_seconds) / (b.at - a.at) for a, b in pairs],
                linewidth=2.0 if server == name else 1.0, alpha=1.0 if server == name else 0.5,
                label=f"{server}{' (starved)' if server == name else ''}")
    ax.hlines(starve.cores, x(starve.start), x(starve.end), color="#d62728", linestyle="--", label="its CPU limit")
    ax.set_ylabel("CPU used (cores)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # room for the label above the starved span
    ax.set_title("CPU each app's cgroup used (its hog included)", fontsize=10, loc="left")
    ax.legend(loc="center left", fontsize=8)

    ax = axes[1]
    samples = [s for s in record.haproxy_samples if s.server == name and start <= s.at <= end]
    ax.step([x(s.at) for s in samples], [s.weight for s in samples], where="post", color="#333333",
            linewidth=1.5, label="HAProxy's weight (stats socket)")
    answers = [(a.at, p) for a in record.agent_samples if a.server == name and start <= a.at <= end
               and (p := _agent_percent(a.answer)) is not None]
    ax.plot([x(at) for at, _ in answers], [p for _, p in answers], ".", color=TRACED, markersize=4,
            label="the agent's answer (up N%)")
    ax.set_ylim(-5, 110)
    ax.set_ylabel("weight")
    ax.set_title(f"{name}: the weight Candor's agent gives HAProxy (ramp × load factor)", fontsize=10, loc="left")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[2]
    per_second: dict[int, list[str]] = defaultdict(list)
    for result in record.requests:
        if start <= result.at <= end and result.status == 200:
            per_second[math.floor(x(result.at))].append(result.server)
    seconds = sorted(per_second)
    ax.step(seconds, [100 * per_second[s].count(name) / len(per_second[s]) for s in seconds], where="post",
            color=TRACED, linewidth=1.5, label=f"{name}'s share (per second)")
    ax.axhline(100 / len(record.instance_names), color="#888888", linestyle=":", label="an equal share")
    starved = figures.starve
    if starved is not None:
        for label, (a, b) in starved.windows.items():
            value = starved.share.get(label)
            if value is not None:
                ax.hlines(100 * value, x(a), x(b), color="#d62728", linewidth=2.5,
                          label="share over the check's windows" if label == "before" else None)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of requests")
    ax.set_xlabel("seconds since the script's start")
    ax.set_title("its share of the requests through HAProxy", fontsize=10, loc="left")
    ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Load weights: a CPU-starved {name} gets less traffic, and its share back once its CPU is",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_charts(record: RunRecord, figures: Figures, directory: Path) -> list[Path]:
    paths = [directory / "busy_workers.png", directory / "haproxy.png", directory / "lost_work.png"]
    busy_workers_chart(record, figures, paths[0])
    haproxy_chart(record, figures, paths[1])
    lost_work_chart(figures, paths[2])
    if record.starve is not None:
        paths.append(directory / "load_weights.png")
        load_weights_chart(record, figures, paths[-1])
    return paths
