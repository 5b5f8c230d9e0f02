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

from candor_tracer.label_check import request_trace
from candor_tracer.tracer import Trace, Tracer

__all__ = ["traced_asgi"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRACED_SCOPES = ("http", "websocket")


class TracedASGI:
    """An ASGI app that traces each HTTP request and WebSocket session of `app` with `trace` (of its scope)."""

    def __init__(self, app: ASGIApp, trace: Callable[[Scope], Trace]) -> None:
        self.app = app
        self.trace = trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in TRACED_SCOPES:
            await self.app(scope, receive, send)
            return
        async with self.trace(scope):
            await self.app(scope, receive, send)


def traced_asgi(app: ASGIApp, counter: Counter,
                labels: Mapping[str, str] | Callable[[Scope], Mapping[str, str]] | None = None, *,
                tracer: Tracer | None = None) -> TracedASGI:
    """`app`, tracing each request into `counter`: labelled by `labels`, a mapping or a function of the scope
    (checked as candor_tracer.label_check.request_trace says)."""
    return TracedASGI(app, request_trace(counter, labels, tracer, "candor_tracer.asgi.traced_asgi", "scope"))
