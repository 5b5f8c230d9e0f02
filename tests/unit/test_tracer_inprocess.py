"""In-process tracing: every scrape of the registry includes in-flight seconds, and totals are exact.

A hand-driven clock makes the arithmetic exact; the real-clock timing tests are in
tests/integration/test_tracer_timing.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    generate_latest,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

from candor_tracer import Tracer
from harness.processes.ports import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def tracer(clock: FakeClock) -> Tracer:
    return Tracer(clock=clock, state_dir=None)


def scraped(registry: CollectorRegistry, name: str = "job_worked_seconds_total", **labels: str) -> float:
    """The value as an exposition (generate_latest) shows it."""
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exposed")


def test_a_scrape_includes_in_flight_seconds_and_the_end_adds_only_the_rest(
        tracer: Tracer, clock: FakeClock, registry: CollectorRegistry) -> None:
    counter = Counter("job_worked_seconds_total", "Time spent on jobs", ["job"], registry=registry)
    with tracer.trace(counter, job="resize"):
        clock.advance(4)
        assert scraped(registry, job="resize") == 4.0
        clock.advance(3)
        assert scraped(registry, job="resize") == 7.0
        clock.advance(2.5)
    assert scraped(registry, job="resize") == 9.5  # the job's duration, nothing counted twice
    clock.advance(10)
    assert scraped(registry, job="resize") == 9.5  # no work, no increase


def test_overlapping_traces_with_equal_labels_are_each_counted(
        tracer: Tracer, clock: FakeClock, registry: CollectorRegistry) -> None:
    counter = Counter("job_worked_seconds_total", "Time spent on jobs", ["job"], registry=registry)
    first = tracer.trace(counter, job="a")
    second = tracer.trace(counter, job="a")
    first.__enter__()
    clock.advance(1)
    second.__enter__()
    clock.advance(1)
    assert scraped(registry, job="a") == 3.0  # 2 s + 1 s in flight
    clock.advance(1)
    first.__exit__(None, None, None)  # 3 s job
    clock.advance(2)
    assert scraped(registry, job="a") == 7.0  # 3 + 4 in flight
    second.__exit__(None, None, None)  # 4 s job
    assert scraped(registry, job="a") == 7.0


@pytest.mark.parametrize("order", ["counter first", "tracer first", "registered mid-trace"])
def test_registration_order_does_not_matter(clock: FakeClock, registry: CollectorRegistry, order: str) -> None:
    if order == "counter first":
        counter = Counter("job_worked_seconds_total", "h", registry=registry)
        tracer = Tracer(clock=clock, state_dir=None)
    elif order == "tracer first":
        tracer = Tracer(clock=clock, state_dir=None)
        counter = Counter("job_worked_seconds_total", "h", registry=registry)
    else:
        tracer = Tracer(clock=clock, state_dir=None)
        counter = Counter("job_worked_seconds_total", "h", registry=None)
    with tracer.trace(counter):
        clock.advance(2)
        if order == "registered mid-trace":
            registry.register(counter)
        assert scraped(registry) == 2.0


def test_a_block_that_raises_still_counts_its_time(
        tracer: Tracer, clock: FakeClock, registry: CollectorRegistry) -> None:
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    with pytest.raises(RuntimeError, match="boom"), tracer.trace(counter, job="x"):
        clock.advance(1.25)
        raise RuntimeError("boom")
    assert scraped(registry, job="x") == 1.25


def test_decorator_on_sync_and_async_functions(tracer: Tracer, clock: FakeClock, registry: CollectorRegistry) -> None:
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)

    @tracer.trace(counter, job="sync")
    def work(seconds: float) -> str:
        clock.advance(seconds)
        return "done"

    @tracer.trace(counter, job="async")
    async def work_async(seconds: float) -> str:
        await asyncio.sleep(0)
        clock.advance(seconds)
        return "done async"

    assert work(1.5) == "done"
    assert work(0.5) == "done"
    assert work.__name__ == "work"
    assert asyncio.run(work_async(2.0)) == "done async"
    assert scraped(registry, job="sync") == 2.0
    assert scraped(registry, job="async") == 2.0


def test_async_context_manager_and_reentry_of_one_trace_object(
        tracer: Tracer, clock: FakeClock, registry: CollectorRegistry) -> None:
    counter = Counter("job_worked_seconds_total", "h", registry=registry)

    async def job() -> None:
        async with tracer.trace(counter):
            clock.advance(1)

    asyncio.run(job())
    same = tracer.trace(counter)
    with same:
        clock.advance(1)
        with same:  # nested use of one object counts both, like two traces
            clock.advance(1)
    assert scraped(registry) == 1 + 2 + 1


def test_unlabelled_counter_and_child_counter(tracer: Tracer, clock: FakeClock, registry: CollectorRegistry) -> None:
    plain = Counter("plain_seconds_total", "h", registry=registry)
    labelled = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    with tracer.trace(plain), tracer.trace(labelled.labels(job="child")):
        clock.advance(3)
        assert scraped(registry, "plain_seconds_total") == 3.0
        assert scraped(registry, job="child") == 3.0


def test_wrong_labels_are_a_clear_error_before_the_block_runs(tracer: Tracer, registry: CollectorRegistry) -> None:
    labelled = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    plain = Counter("plain_seconds_total", "h", registry=registry)
    with pytest.raises(ValueError, match=r"[Ii]ncorrect label names"):
        tracer.trace(labelled, queue="x")
    with pytest.raises(ValueError, match="plain_seconds has no label names"):
        tracer.trace(plain, job="x")
    with pytest.raises(TypeError, match="needs a prometheus_client Counter"):
        tracer.trace("job_worked_seconds_total")  # type: ignore[arg-type]


def test_every_exposition_path_includes_in_flight_time(clock: FakeClock, registry: CollectorRegistry) -> None:
    """start_http_server, make_wsgi_app and make_asgi_app all go through the registry: all see in-flight time."""
    tracer = Tracer(clock=clock, state_dir=None)
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    wsgi_port = free_port()
    wsgi = make_server("127.0.0.1", wsgi_port, make_wsgi_app(registry), WSGIServer, _QuietHandler)
    wsgi_thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
    wsgi_thread.start()
    try:
        with tracer.trace(counter, job="http"):
            clock.advance(5)
            for url in (f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{wsgi_port}/metrics"):
                body = urllib.request.urlopen(url, timeout=10).read().decode()
                assert 'job_worked_seconds_total{job="http"} 5.0' in body, body
            clock.advance(1)
            body = asyncio.run(_asgi_get(make_asgi_app(registry)))
            assert 'job_worked_seconds_total{job="http"} 6.0' in body, body
    finally:
        server.shutdown()
        wsgi.shutdown()
        wsgi.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


async def _asgi_get(app: object) -> str:
    """Call an ASGI app the way a server does and return the response body."""
    chunks: list[bytes] = []
    request_sent = False

    async def receive() -> dict[str, object]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            assert isinstance(body, bytes)
            chunks.append(body)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    await app(scope, receive, send)  # type: ignore[operator]
    return b"".join(chunks).decode()


def test_two_concurrent_scrapers_see_a_monotonic_counter_and_the_exact_total(registry: CollectorRegistry) -> None:
    """Two scrapers race each other and three workers; each trace's duration is bracketed by clock reads."""
    tracer = Tracer(state_dir=None)  # real time.monotonic
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    stop = threading.Event()
    seen: list[list[float]] = [[], []]
    low: list[float] = []
    high: list[float] = []

    def scraper(index: int) -> None:
        while not stop.is_set():
            seen[index].append(scraped(registry, job="w"))

    def worker() -> None:
        for _ in range(150):
            a0 = time.monotonic()
            with tracer.trace(counter, job="w"):
                a1 = time.monotonic()
                time.sleep(0.0002)
                b0 = time.monotonic()
            b1 = time.monotonic()
            low.append(b0 - a1)
            high.append(b1 - a0)

    with tracer.trace(counter, job="w"):  # create the series so the scrapers find it
        pass
    base = scraped(registry, job="w")
    scrapers = [threading.Thread(target=scraper, args=(i,)) for i in range(2)]
    workers = [threading.Thread(target=worker) for _ in range(3)]
    for t in scrapers + workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in scrapers:
        t.join()
    for values in seen:
        assert len(values) > 5
        assert values == sorted(values), "a scraper saw the counter go backwards"
    total = scraped(registry, job="w") - base
    assert sum(low) - 1e-6 <= total <= sum(high) + 1e-6


def test_registry_argument_exposes_in_flight_trace_counts(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    tracer = Tracer(registry=registry, clock=clock, state_dir=None)
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    with tracer.trace(counter, job="a"), tracer.trace(counter, job="b"):
        assert registry.get_sample_value("candor_tracer_inflight_traces", {"metric": "job_worked_seconds"}) == 2
    assert registry.get_sample_value("candor_tracer_inflight_traces", {"metric": "job_worked_seconds"}) == 0


def test_heartbeat_in_process_is_harmless(tracer: Tracer) -> None:
    tracer.heartbeat()
    assert tracer.journal_path is None


def test_a_removed_or_cleared_label_set_starts_afresh(tracer: Tracer, clock: FakeClock,
                                                       registry: CollectorRegistry) -> None:
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    with tracer.trace(counter, job="a"):
        clock.advance(2)
    counter.remove("a")
    with tracer.trace(counter, job="a"):
        clock.advance(3)
        assert scraped(registry, job="a") == 3.0  # the new child, with its in-flight time
    counter.clear()
    with tracer.trace(counter, job="a"):
        clock.advance(1)
    assert scraped(registry, job="a") == 1.0
