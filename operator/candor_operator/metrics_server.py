"""`--metrics http://0.0.0.0:8081/metrics`: the operator's Prometheus endpoint, beside kopf's liveness endpoint.

kopf's health server takes no extra routes, so /metrics gets a small aiohttp server of its own, started
and stopped with the operator (kopf startup and cleanup handlers). Each scrape first asks the peering
object whether this replica is the active one, so `candor_operator_active_replica` is never older than
the scrape (one GET per scrape interval).
"""

from __future__ import annotations

import logging
import urllib.parse

import aiohttp.web
from prometheus_client.exposition import choose_encoder

from candor_operator import metrics
from candor_operator.kube import ApiError, KubeClient
from candor_operator.peering import replica_is_active

logger = logging.getLogger(__name__)

PEERING_PATH = "/apis/kopf.dev/v1/clusterkopfpeerings/{name}"


class ReplicaWatch:
    """Whether this replica is the active one: always when standalone; else kopf's rule on the peering object."""

    def __init__(self, client: KubeClient, peering: str | None, identity: str, priority: int,
                 timeout: float = 2.0) -> None:
        self.client = client
        self.peering = peering
        self.identity = identity
        self.priority = priority
        self.timeout = timeout

    async def refresh(self) -> None:
        if self.peering is None:
            metrics.GOVERNED.set_active(True)
            return
        try:
            body = await self.client.get_or_none(PEERING_PATH.format(name=self.peering), timeout=self.timeout)
        except (ApiError, TimeoutError, OSError, aiohttp.ClientError) as error:
            logger.warning("cannot read the peering object %s: %s", self.peering, error)
            return  # keep the last answer: an API hiccup is no hand-over
        # No peering object: kopf runs this replica standalone.
        peers = (body or {}).get("status") or {}
        metrics.GOVERNED.set_active(replica_is_active(peers if isinstance(peers, dict) else {}, self.identity,
                                                      self.priority))


def parse_endpoint(endpoint: str) -> tuple[str, int, str]:
    """`http://host:port/path` -> (host, port, path); a clear error names what is wrong."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"--metrics: expected http://HOST:PORT/PATH, got {endpoint!r}")
    return parts.hostname, parts.port, parts.path or "/metrics"


class MetricsServer:
    def __init__(self, endpoint: str, replica: ReplicaWatch) -> None:
        self.host, self.port, self.path = parse_endpoint(endpoint)
        self.replica = replica
        self._runner: aiohttp.web.AppRunner | None = None

    async def _scrape(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        await self.replica.refresh()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return aiohttp.web.Response(body=encoder(metrics.REGISTRY), headers={"Content-Type": content_type})

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_get(self.path, self._scrape)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, self.host, self.port).start()
        logger.info("serving metrics at http://%s:%d%s", self.host, self.port, self.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
