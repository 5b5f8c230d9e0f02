"""pytest wiring of the job-framework tests (Celery, RQ, gunicorn, uvicorn): a Redis ``broker`` and the
``run`` that records what the framework's jobs did, a test each; and `request_later`, the HTTP request the
web-server tests send without waiting for it.

Registered in tests/conftest.py (``pytest_plugins``); what a run measures is tests/support/framework_runs.py.
A test that needs the broker lists it before ``run``, so the broker outlives the run's teardown.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.framework_runs import DeathWatch, Run
from tests.support.redis_server import redis_server

_ids = itertools.count()
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own; its URL."""
    with redis_server(tmp_path / "redis") as url:
        yield url


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """The test's state directory (tmp_path/state) and its record of jobs, the deaths of their processes watched."""
    state = tmp_path / "state"
    state.mkdir()
    deaths = DeathWatch()
    try:
        yield Run(state, deaths)
    finally:
        deaths.close()


def request_later(port: int, route: str, seconds: float) -> tuple[str, concurrent.futures.Future[int | None]]:
    """GET /`route` of the app on `port`, taking `seconds`, from a thread: the request's id and its status to be
    (None when the worker serving it was killed)."""
    request_id = f"{route}-{next(_ids)}"

    def get() -> int | None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("GET", f"/{route}?seconds={seconds}&id={request_id}")
            return connection.getresponse().status
        except (ConnectionError, http.client.HTTPException):
            return None  # the worker serving it was killed
        finally:
            connection.close()

    return request_id, _pool.submit(get)
