"""The operator's readiness endpoint: ready only when its webhook answers and its API access works.

The chart's readinessProbe points here, so the webhook Service sends the API server's admission
requests only to replicas that can answer them: a replica still starting (webhook not bound, kopf
not yet logged in and watching) is no endpoint, instead of a connection refused that the API server
turns into a pod admitted without its sidecar (`failurePolicy: Ignore`).

Checks, each bounded in time and run at most every `CACHE_SECONDS`:
- `webhook`: a request to the operator's own admission port over TLS gets an HTTP answer (the
  listener is bound and its handler runs: an empty body gets its 400);
- `watches`: kopf's watch stream of HealthPolicies has been answered (seen on the HTTP session kopf logs
  in with), the operator's caches of Services and Deployments (informer.py) have listed them and are watching,
  and the API server still lets Candor's account list HealthPolicies where it serves them.

A standby replica (paused by kopf's peering in favour of a live replica of higher priority) does not
watch, yet is ready: its webhook answers from API lookups, and a rolling update of the operator would
otherwise wait for a replica that can never become ready.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import aiohttp
import aiohttp.web

logger = logging.getLogger("candor.operator")

CHECK_TIMEOUT = 2.0
CACHE_SECONDS = 1.0

Check = Callable[[], Awaitable[str | None]]  # None when fine, else what is wrong

WATCHED = frozenset({"healthpolicies", "services", "deployments"})  # the kinds Candor's handlers follow


class WatchAnswers:
    """The kinds whose watch requests (`?watch=true`) the API server has answered 200 on kopf's session."""

    def __init__(self) -> None:
        self.answered: set[str] = set()

    def trace_config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_request_end(_: aiohttp.ClientSession, __: object, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status == 200 and params.url.query.get("watch") == "true":
                self.answered.add(params.url.path.rstrip("/").rsplit("/", 1)[-1])

        trace.on_request_end.append(on_request_end)
        return trace


def outranked(peers: dict[str, object], priority: int) -> bool:
    """Whether kopf's peering status (`{identity: {priority, lifetime, lastseen}}`) holds a live peer of higher
    priority than ours: then kopf pauses this replica."""
    now = time.time()
    for info in peers.values():
        if not isinstance(info, dict):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info.get("lastseen"))).timestamp()
            alive = seen + float(info.get("lifetime", 60)) > now
            if alive and int(info.get("priority", 0)) > priority:
                return True
        except (TypeError, ValueError):
            continue
    return False


async def webhook_answers(url: str) -> str | None:
    """None when an HTTPS request to the admission server gets any HTTP answer."""
    context = ssl.create_default_context()
    # Our own listener, by address: its certificate names the Service, and who answers is not in doubt.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT)) as session, \
                session.post(url, data=b"", ssl=context) as response:
            await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return f"the admission server at {url} does not answer: {type(error).__name__}: {str(error)[:120]}"
    return None


def self_url(listen: str, port: int, path: str, handler: str) -> str:
    host = "127.0.0.1" if listen in ("", "0.0.0.0") else ("::1" if listen == "::" else listen)
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}/{path.strip('/')}/{handler}"


class Readiness:
    """The readiness server: GET <path> answers 200 with each check's state, or 503 naming what fails."""

    def __init__(self, checks: dict[str, Check]) -> None:
        self.checks = checks
        self._last: tuple[float, dict[str, str]] | None = None
        self._lock = asyncio.Lock()
        self._runner: aiohttp.web.AppRunner | None = None

    async def states(self) -> dict[str, str]:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < CACHE_SECONDS:
                return self._last[1]
            results = await asyncio.gather(*(self._run(check) for check in self.checks.values()))
            states = dict(zip(self.checks, results, strict=True))
            self._last = (time.monotonic(), states)
            return states

    @staticmethod
    async def _run(check: Check) -> str:
        try:
            problem = await asyncio.wait_for(check(), CHECK_TIMEOUT + 1)
        except TimeoutError:
            problem = "no answer in time"
        return "ok" if problem is None else problem

    async def handle(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        states = await self.states()
        ready = all(state == "ok" for state in states.values())
        return aiohttp.web.json_response({"ready": ready, "checks": states}, status=200 if ready else 503)

    async def start(self, endpoint: str) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "http" or not parts.port:
            raise ValueError(f"--readiness: expected http://HOST:PORT/PATH, got {endpoint!r}")
        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get(parts.path or "/", self.handle)])
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, parts.hostname or "0.0.0.0", parts.port).start()
        logger.info("readiness served at %s", endpoint)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
