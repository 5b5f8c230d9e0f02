"""The framework integrations in-process: what they label, when a trace ends, and the errors for bad set-up.

The real workers, kills and journals are in tests/integration/test_celery.py, test_rq.py, test_gunicorn.py
and test_uvicorn.py; here a hand-driven clock makes the arithmetic exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, Counter
from rq import Worker

from candor_tracer import Tracer
from candor_tracer.asgi import traced_asgi
from candor_tracer.celery import instrument
from candor_tracer.rq import traced_worker_class
from candor_tracer.wsgi import traced_wsgi


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracer(clock: FakeClock) -> Tracer:
    return Tracer(clock=clock, state_dir=None)


def value(counter: Counter, **labels: str) -> float:
    registry = CollectorRegistry()
    registry.register(counter)
    got = registry.get_sample_value(f"{counter._name}_total", labels)
    return 0.0 if got is None else got


def test_celery_labels_each_task_by_name_and_queue(tracer: Tracer, clock: FakeClock) -> None:
    app = Celery("unit", set_as_current=False)
    app.conf.task_always_eager = True  # real Celery, tasks run at once in this process (signals included)
    counter = Counter("job_worked_seconds_total", "Seconds in tasks", ["task", "queue"], registry=None)
    instrumentation = instrument(app, counter, queue_label="queue", tracer=tracer)
    try:
        @app.task(name="resize")
        def resize(seconds: float) -> None:
            clock.now += seconds

        resize.delay(2.0)
        resize.delay(0.5)
        assert value(counter, task="resize", queue="eager") == 2.5
    finally:
        instrumentation.uninstrument()
    resize.delay(1.0)  # not traced any more
    assert value(counter, task="resize", queue="eager") == 2.5


def test_celery_ignores_the_tasks_of_another_app(tracer: Tracer, clock: FakeClock) -> None:
    ours, theirs = Celery("ours", set_as_current=False), Celery("theirs", set_as_current=False)
    theirs.conf.task_always_eager = True
    counter = Counter("job_worked_seconds_total", "Seconds in tasks", ["task"], registry=None)
    instrumentation = instrument(ours, counter, tracer=tracer)
    try:
        @theirs.task(name="other")
        def other() -> None:
            clock.now += 1

        other.delay()
        assert value(counter, task="other") == 0.0
    finally:
        instrumentation.uninstrument()


@pytest.mark.parametrize(("labels", "queue_label", "problem"), [
    (["job"], None, "has labels ['job'], but this integration fills ['task']"),
    (["task"], "queue", "has labels ['task'], but this integration fills ['task', 'queue']"),
    (["task", "queue"], None, "fills ['task']"),
])
def test_a_counter_whose_labels_do_not_fit_is_refused_at_set_up(labels: list[str], queue_label: str | None,
                                                                 problem: str) -> None:
    counter = Counter("job_worked_seconds_total", "Seconds in tasks", labels, registry=None)
    with pytest.raises(ValueError, match=r"candor_tracer\.celery\.instrument: counter job_worked_seconds") as error:
        instrument(Celery("unit", set_as_current=False), counter, queue_label=queue_label)
    assert problem in str(error.value)


def test_other_bad_set_ups_name_the_problem() -> None:
    counter = Counter("job_worked_seconds_total", "Seconds in jobs", ["job"], registry=None)
    with pytest.raises(TypeError, match="counter must be a prometheus_client Counter, got str"):
        traced_worker_class("job_worked_seconds_total")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass the Counter itself, not a child"):
        traced_worker_class(counter.labels(job="x"))
    with pytest.raises(TypeError, match="base must be an rq Worker class, got <class 'dict'>"):
        traced_worker_class(counter, dict)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="repeat a name"):
        traced_worker_class(counter, job_label="job", queue_label="job")
    with pytest.raises(TypeError, match="labels must be a mapping or a function of the environ, got 'job'"):
        traced_wsgi(lambda environ, start: [], counter, "job")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"has labels \['job'\], but this integration fills \[\]"):
        traced_asgi(lambda scope, receive, send: asyncio.sleep(0), counter)


def test_rq_worker_class_keeps_the_base_and_its_name() -> None:
    counter = Counter("job_worked_seconds_total", "Seconds in jobs", ["job", "queue"], registry=None)
    traced = traced_worker_class(counter, Worker, queue_label="queue", name="ShopWorker")
    assert issubclass(traced, Worker) and traced.__name__ == "ShopWorker"


def test_wsgi_counts_a_streamed_response_until_the_server_closes_it(tracer: Tracer, clock: FakeClock) -> None:
    counter = Counter("request_worked_seconds_total", "Seconds serving", ["app", "method"], registry=None)
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            for chunk in (b"a", b"b"):
                clock.now += 1.5  # producing each chunk takes time
                yield chunk

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        clock.now += 1
        start_response("200 OK", [])
        return Body()

    traced = traced_wsgi(app, counter, lambda environ: {"app": "shop", "method": environ["REQUEST_METHOD"]},
                         tracer=tracer)
    body = traced({"REQUEST_METHOD": "GET"}, lambda status, headers: None)
    assert b"".join(body) == b"ab"
    assert value(counter, app="shop", method="GET") == 1.0 + 3.0  # in flight while streamed
    clock.now += 0.5  # the server sends the last chunk, then closes the body
    body.close()  # type: ignore[attr-defined]
    clock.now += 10
    body.close()  # type: ignore[attr-defined]  # a second close ends nothing more
    assert closed == [True, True] and value(counter, app="shop", method="GET") == 4.5


def test_asgi_counts_concurrent_requests_each_and_skips_lifespan(tracer: Tracer, clock: FakeClock) -> None:
    counter = Counter("request_worked_seconds_total", "Seconds serving", ["app"], registry=None)
    release = asyncio.Event()
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "http":
            await release.wait()

    traced = traced_asgi(app, counter, {"app": "shop"}, tracer=tracer)

    async def main() -> None:
        async def nothing() -> dict[str, Any]:
            return {}

        async def ignore(message: Any) -> None:
            return None

        await traced({"type": "lifespan"}, nothing, ignore)
        requests = [asyncio.ensure_future(traced({"type": "http"}, nothing, ignore)) for _ in range(2)]
        await asyncio.sleep(0)
        clock.now += 3  # both requests in flight for 3 s
        release.set()
        await asyncio.gather(*requests)

    asyncio.run(main())
    assert seen == ["lifespan", "http", "http"]
    assert value(counter, app="shop") == 6.0
