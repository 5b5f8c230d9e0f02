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

from candor_tracer.label_check import require_counter, require_labels
from candor_tracer.tracer import Trace, Tracer

__all__ = ["traced_wsgi"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _default_tracer() -> Tracer:
    from candor_tracer import default_tracer
    return default_tracer


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
    """A WSGI app that traces each request of `app` into `counter`."""

    def __init__(self, app: WSGIApp, counter: Counter, labels: Callable[[Environ], Mapping[str, str]] | None,
                 static: Mapping[str, str], tracer: Tracer) -> None:
        self.app = app
        self.counter = counter
        self.labels = labels
        self.static = dict(static)
        self.tracer = tracer

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        labels = self.static if self.labels is None else {**self.static, **self.labels(environ)}
        traced = self.tracer.trace(self.counter, **labels)
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
    """`app`, tracing each request into `counter`: labelled by `labels`, a mapping or a function of the environ.

    With a mapping (or none), the counter's label names must be exactly its keys (checked now); a function's
    labels are checked per request, and ones that do not fit the counter raise ValueError naming them.
    """
    where = "candor_tracer.wsgi.traced_wsgi"
    if labels is None or isinstance(labels, Mapping):
        static = dict(labels or {})
        require_labels(counter, tuple(static), where)
        return TracedWSGI(app, counter, None, static, tracer or _default_tracer())
    if not callable(labels):
        raise TypeError(f"{where}: labels must be a mapping or a function of the environ, got {labels!r}")
    require_counter(counter, where)
    return TracedWSGI(app, counter, labels, {}, tracer or _default_tracer())
