"""The ASGI app the uvicorn test serves: GET /sleep?seconds=S&id=ID awaits S seconds, /block?... blocks the loop.

Traced by candor_tracer.asgi (label `route` = the path), with the event loop watched from the lifespan
startup (the documented asyncio pattern); a middleware around the traced app reports each request's start
and end to the test (framework_runs.report).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import Counter

from candor_tracer import LoopWatch, default_tracer, watch_event_loop
from candor_tracer.asgi import ASGIApp, traced_asgi
from harness.apps.framework_runs import report

REQUEST_SECONDS = Counter("request_worked_seconds_total", "Seconds spent serving requests", ["route"])
_watch: list[LoopWatch] = []


async def serve(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                default_tracer.open_journal()  # seen by the sidecar before the first request
                _watch.append(watch_event_loop(threshold=0.3))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    seconds = float(parse_qs(scope["query_string"].decode())["seconds"][0])
    if scope["path"] == "/block":
        time.sleep(seconds)  # a handler that blocks the event loop: a stall the watchdog records
    else:
        await asyncio.sleep(seconds)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})


def measured(app: ASGIApp) -> ASGIApp:
    async def measure(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = parse_qs(scope["query_string"].decode())["id"][0]
        report("start", request_id, scope["path"])
        try:
            await app(scope, receive, send)
        finally:
            report("end", request_id, scope["path"])

    return measure


app = measured(traced_asgi(serve, REQUEST_SECONDS, lambda scope: {"route": scope["path"]}))
