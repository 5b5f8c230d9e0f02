"""Real-clock timing of in-process tracing: scrapes during long, overlapping jobs.

The tolerances are on the tracer's arithmetic: each expected value comes from clocks measured around
the jobs and scrapes in this run, never from nominal sleep lengths, so a loaded machine cannot fail them.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from candor_tracer import Tracer
from harness.processes.ports import free_port

pytestmark = pytest.mark.integration


def value_in(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_overlapping_equal_label_jobs_in_four_threads_scraped_every_quarter_second() -> None:
    """4 threads, staggered 2 s jobs, same labels, HTTP scrapes every 0.25 s: total = Σ job durations ± 1 %."""
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "Seconds spent on jobs", ["job"], registry=registry)
    tracer = Tracer(state_dir=None)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    durations: list[float] = []
    lock = threading.Lock()
    scrapes: list[float] = []
    done = threading.Event()

    def worker(index: int) -> None:
        time.sleep(index * 0.5)  # staggered: the jobs overlap in every combination
        for _ in range(2):
            start = time.monotonic()
            with tracer.trace(counter, job="webhook"):
                time.sleep(2.0)
            with lock:
                durations.append(time.monotonic() - start)

    def scraper() -> None:
        while not done.is_set():
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            scrapes.append(value_in(body, "job_worked_seconds_total", job="webhook"))
            done.wait(0.25)

    try:
        scraping = threading.Thread(target=scraper)
        scraping.start()
        workers = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        done.set()
        scraping.join()
        final = value_in(generate_latest(registry).decode(), "job_worked_seconds_total", job="webhook")
    finally:
        server.shutdown()
    expected = sum(durations)
    assert len(durations) == 8
    assert abs(final - expected) <= 0.01 * expected, (final, expected)
    assert scrapes == sorted(scrapes), "the counter went backwards between scrapes"
    # While 4 jobs ran at once, the counter rose by about 4 s per second: never stuck at zero.
    assert len(scrapes) >= 12
    assert max(b - a for a, b in itertools.pairwise(scrapes)) > 0.25 * 2


def test_each_half_second_scrape_of_a_ten_second_job_increases_by_the_elapsed_time() -> None:
    """A 10 s trace scraped every 0.5 s: each increment is within 2 % of the time between the scrapes."""
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "Seconds spent on jobs", registry=registry)
    tracer = Tracer(state_dir=None)
    readings: list[tuple[float, float, float]] = []  # (clock before, value, clock after)

    def scrape() -> None:
        before = time.monotonic()
        value = value_in(generate_latest(registry).decode(), "job_worked_seconds_total")
        readings.append((before, value, time.monotonic()))

    job_start = time.monotonic()
    with tracer.trace(counter):
        next_at = job_start
        while time.monotonic() - job_start < 10.0:
            next_at += 0.5
            time.sleep(max(0.0, next_at - time.monotonic()))
            scrape()
    job_seconds = time.monotonic() - job_start
    scrape()
    assert len(readings) >= 19
    for (b0, v0, a0), (b1, v1, a1) in itertools.pairwise(readings[:-1]):
        increment = v1 - v0
        # The tracer read its clock inside each scrape, so the increment is bracketed exactly...
        assert b1 - a0 - 1e-6 <= increment <= a1 - b0 + 1e-6
        # ...and within 2 % of the elapsed time between the scrapes (0.5 s nominal), measured at the scrapes'
        # midpoints; a scrape preempted on a busy machine widens its bracket, never the tracer's error.
        elapsed = (b1 + a1) / 2 - (b0 + a0) / 2
        uncertainty = ((a1 - b1) + (a0 - b0)) / 2
        assert abs(increment - elapsed) <= 0.02 * elapsed + uncertainty, (increment, elapsed, uncertainty)
    assert abs(readings[-1][1] - job_seconds) <= 0.001 * job_seconds + 0.002
