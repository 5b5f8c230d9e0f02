"""The WSGI app the gunicorn tests serve: GET /quick|/timeout|/stuck?seconds=S&id=ID sleeps S seconds.

Traced by candor_tracer.wsgi (label `route` = the path); a middleware around the traced app reports each
request's start and end (once the server closed the response) to the test (framework_runs.report).
/stuck blocks SIGABRT first, as a worker stuck in C code would not notice it: gunicorn's `timeout` then has
to SIGKILL the worker.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import Counter

from candor_tracer.wsgi import traced_wsgi
from harness.apps.framework_runs import busy, report

REQUEST_SECONDS = Counter("request_worked_seconds_total", "Seconds spent serving requests", ["route"])


def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ["PATH_INFO"]
    if path == "/stuck":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    busy(float(query["seconds"][0]))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


class _MeasuredBody:
    def __init__(self, body: Iterable[bytes], end: Callable[[], None]) -> None:
        self._body, self._end = body, end

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            getattr(self._body, "close", lambda: None)()
        finally:
            self._end()


def measured(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def measure(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request_id, path = parse_qs(environ.get("QUERY_STRING", ""))["id"][0], environ["PATH_INFO"]
        report("start", request_id, path)
        try:
            body = app(environ, start_response)
        except BaseException:
            report("end", request_id, path)
            raise
        return _MeasuredBody(body, lambda: report("end", request_id, path))

    return measure


application = measured(traced_wsgi(serve, REQUEST_SECONDS, labels=lambda environ: {"route": environ["PATH_INFO"]}))
