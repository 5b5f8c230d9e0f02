"""WSGI middleware: trace every request of an app, from the call until the server closes the response.

    from candor_tracer.wsgi import traced_wsgi
    REQUEST_SECONDS = Counter("request_worked_seconds_total", "Seconds spent serving requests", ["app"])
    application = traced_wsgi(application, REQUEST_SECONDS, {"app": "shop"})

    # labels per request: a function of the WSGI environ (its names must be the counter's)
    application = traced_wsgi(application, COUNTER, lambda environ: {"method": environ["REQUEST_METHOD"]})

The trace ends when the server closes the response iterable (PEP 3333), so a streamed body counts until its
last chunk is sent, and a request aborted by an exception (gunicorn's SIGABRT on `timeout` raises
SystemExit inside the worker) ends its trace on the way out. Any WSGI server works; for gunicorn's
worker journals see candor_tracer.gunicorn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import Counter

from candor_tracer.label_check import request_trace
from candor_tracer.tracer import Trace, Tracer

__all__ = ["traced_wsgi"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class _TracedBody:
    """The app's response iterable; closing it (the server always does) ends the request's trace once."""

    def __init__(self, body: Iterable[bytes], traced: Trace) -> None:
        self._body = body
        self._traced: Trace | None = traced

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            traced, self._traced = self._traced, None
            if traced is not None:
                traced.__exit__(None, None, None)


class TracedWSGI:
    """A WSGI app that traces each request of `app` with `trace` (of its environ)."""

    def __init__(self, app: WSGIApp, trace: Callable[[Environ], Trace]) -> None:
        self.app = app
        self.trace = trace

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        traced = self.trace(environ)
        traced.__enter__()
        try:
            body = self.app(environ, start_response)
        except BaseException:
            traced.__exit__(None, None, None)
            raise
        return _TracedBody(body, traced)


def traced_wsgi(app: WSGIApp, counter: Counter,
                labels: Mapping[str, str] | Callable[[Environ], Mapping[str, str]] | None = None, *,
                tracer: Tracer | None = None) -> TracedWSGI:
    """`app`, tracing each request into `counter`: labelled by `labels`, a mapping or a function of the environ
    (checked as candor_tracer.label_check.request_trace says)."""
    return TracedWSGI(app, request_trace(counter, labels, tracer, "candor_tracer.wsgi.traced_wsgi", "environ"))
