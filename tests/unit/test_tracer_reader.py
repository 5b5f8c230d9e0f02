"""The reader API the sidecar uses: series identity, arithmetic at a given `now`, folding."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from candor_tracer import Tracer
from candor_tracer.journal.reader import fold_dead_writers, read_totals, read_writers


def test_series_keep_name_help_and_the_counters_label_order(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "Seconds spent on jobs", ["queue", "job"], registry=registry)
    plain = Counter("sweeps_seconds", "Seconds sweeping", registry=registry)
    tracer = Tracer(state_dir=tmp_path)
    try:
        with tracer.trace(counter, job="resize", queue="high"), tracer.trace(plain):
            pass
        snapshot = read_totals(tmp_path)
        by_name = {s.name: s for s in snapshot.series}
        assert set(by_name) == {"job_worked_seconds", "sweeps_seconds"}
        assert by_name["job_worked_seconds"].labels == (("queue", "high"), ("job", "resize"))
        assert by_name["job_worked_seconds"].documentation == "Seconds spent on jobs"
        assert by_name["sweeps_seconds"].labels == ()
    finally:
        tracer.close()


def test_in_flight_seconds_are_counted_up_to_the_given_now(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", registry=registry)
    tracer = Tracer(state_dir=tmp_path)
    try:
        before = time.monotonic()
        with tracer.trace(counter):
            inside = time.monotonic()
            first = read_totals(tmp_path, now=inside + 10.0)
            second = read_totals(tmp_path, now=inside + 25.0)
        [one], [two] = first.series, second.series
        assert 10.0 <= one.value <= 10.0 + (inside - before) + 1e-6
        assert two.value - one.value == pytest.approx(15.0, abs=1e-6)
        assert first.now == inside + 10.0
        [writer] = first.writers
        assert writer.inflight == 1 and writer.oldest_inflight_start is not None
        assert before <= writer.oldest_inflight_start <= inside
    finally:
        tracer.close()


def test_fold_dead_writers_counts_each_journal_once(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", registry=registry)
    tracers = [Tracer(state_dir=tmp_path) for _ in range(3)]
    for tracer in tracers:
        with tracer.trace(counter):
            time.sleep(0.01)
    tracers[0].close()
    tracers[1].close()  # two dead writers, one live
    try:
        before = registry.get_sample_value("job_worked_seconds_total")
        assert fold_dead_writers(tmp_path) == 2
        assert fold_dead_writers(tmp_path) == 0
        after = read_totals(tmp_path)
        assert after.series[0].value == pytest.approx(before, abs=1e-6)
        assert after.last_fold is not None and abs(after.last_fold - time.time()) < 60
        assert len(after.writers) == 1
        assert len(list(tmp_path.glob("journal-*.cj"))) == 1
    finally:
        tracers[2].close()


def test_a_missing_state_directory_reads_as_empty(tmp_path: Path) -> None:
    snapshot = read_totals(tmp_path / "not-there")
    assert snapshot.series == () and snapshot.writers == () and snapshot.last_fold is None
    assert fold_dead_writers(tmp_path / "not-there") == 0


def test_many_threads_tracing_and_scraping_keep_journal_and_counter_equal(tmp_path: Path) -> None:
    """Lock-free starts, locked ends and scrapes from several threads: the journal matches the counter."""
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    tracer = Tracer(state_dir=tmp_path)
    stop = threading.Event()

    def worker(index: int) -> None:
        for i in range(1500):
            with tracer.trace(counter, job=f"w{index % 2}"):
                if i % 100 == 0:
                    time.sleep(0.001)  # now and then a long one, so slots pile up and the table grows

    def scraper() -> None:
        while not stop.is_set():
            generate_latest(registry)
            read_totals(tmp_path)

    try:
        scraping = threading.Thread(target=scraper)
        scraping.start()
        workers = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        scraping.join()
        totals = {s.labels[0][1]: s.value for s in read_totals(tmp_path).series}
        for job in ("w0", "w1"):
            expected = registry.get_sample_value("job_worked_seconds_total", {"job": job})
            assert totals[job] == pytest.approx(expected, abs=1e-6), job
        assert read_totals(tmp_path).writers[0].inflight == 0
    finally:
        tracer.close()


def test_read_writers_sees_the_same_writers_as_read_totals_without_the_series(tmp_path: Path) -> None:
    counter = Counter("job_worked_seconds_total", "h", ["task"], registry=CollectorRegistry())
    tracer = Tracer(state_dir=tmp_path)
    try:
        with tracer.trace(counter, task="done"):
            pass
        running = tracer.trace(counter, task="running")
        running.__enter__()
        tracer.heartbeat()
        now = time.monotonic()
        full, light = read_totals(tmp_path, now=now), read_writers(tmp_path, now=now)
        assert light.series == () and len(full.series) == 2
        assert light.writers == full.writers and light.writers[0].inflight == 1
        assert light.writers[0].heartbeat is not None
        running.__exit__(None, None, None)
    finally:
        tracer.close()
