"""ASGI middleware: trace every HTTP request and WebSocket session of an app while the app handles it.

    from candor_tracer.asgi import traced_asgi
    REQUEST_SECONDS = Counter("request_worked_seconds_total", "Seconds spent serving requests", ["app"])
    app = traced_asgi(app, REQUEST_SECONDS, {"app": "shop"})
    app = traced_asgi(app, COUNTER, lambda scope: {"method": scope.get("method", "WS")})

The trace covers the app's coroutine for the connection's scope, so concurrent requests on one event loop
are each counted; lifespan events are not traced. Pair it with `candor_tracer.watch_event_loop()` (call it
in a startup hook) so a blocked loop shows in the sidecar's deadlock check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from prometheus_client import Counter

from candor_tracer.label_check import require_counter, require_labels
from candor_tracer.tracer import Tracer

__all__ = ["traced_asgi"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRACED_SCOPES = ("http", "websocket")


def _default_tracer() -> Tracer:
    from candor_tracer import default_tracer
    return default_tracer


class TracedASGI:
    """An ASGI app that traces each HTTP request and WebSocket session of `app` into `counter`."""

    def __init__(self, app: ASGIApp, counter: Counter, labels: Callable[[Scope], Mapping[str, str]] | None,
                 static: Mapping[str, str], tracer: Tracer) -> None:
        self.app = app
        self.counter = counter
        self.labels = labels
        self.static = dict(static)
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in TRACED_SCOPES:
            await self.app(scope, receive, send)
            return
        labels = self.static if self.labels is None else {**self.static, **self.labels(scope)}
        async with self.tracer.trace(self.counter, **labels):
            await self.app(scope, receive, send)


def traced_asgi(app: ASGIApp, counter: Counter,
                labels: Mapping[str, str] | Callable[[Scope], Mapping[str, str]] | None = None, *,
                tracer: Tracer | None = None) -> TracedASGI:
    """`app`, tracing each request into `counter`: labelled by `labels`, a mapping or a function of the scope.

    With a mapping (or none), the counter's label names must be exactly its keys (checked now); a function's
    labels are checked per request, and ones that do not fit the counter raise ValueError naming them.
    """
    where = "candor_tracer.asgi.traced_asgi"
    if labels is None or isinstance(labels, Mapping):
        static = dict(labels or {})
        require_labels(counter, tuple(static), where)
        return TracedASGI(app, counter, None, static, tracer or _default_tracer())
    if not callable(labels):
        raise TypeError(f"{where}: labels must be a mapping or a function of the scope, got {labels!r}")
    require_counter(counter, where)
    return TracedASGI(app, counter, labels, {}, tracer or _default_tracer())
