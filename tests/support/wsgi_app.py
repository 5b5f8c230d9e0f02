"""The WSGI app the gunicorn tests serve: GET /quick|/timeout|/stuck?seconds=S&id=ID sleeps S seconds.

Traced by candor_tracer.wsgi (label `route` = the path); each request reports its own start and end to the
test's Redis ($CANDOR_TEST_REDIS). /stuck blocks SIGABRT first, as a worker stuck in C code would not
notice it: gunicorn's `timeout` then has to SIGKILL the worker.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import Counter

from candor_tracer.wsgi import traced_wsgi
from tests.support.framework_runs import client_for, sleep_as_a_job

REQUEST_SECONDS = Counter("request_worked_seconds_total", "Seconds spent serving requests", ["route"])


def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ["PATH_INFO"]
    if path == "/stuck":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    sleep_as_a_job(client_for(os.environ["CANDOR_TEST_REDIS"]), query["id"][0], path, float(query["seconds"][0]))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


application = traced_wsgi(serve, REQUEST_SECONDS, labels=lambda environ: {"route": environ["PATH_INFO"]})
