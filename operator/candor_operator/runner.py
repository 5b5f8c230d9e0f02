"""Start kopf with Candor's registry and settings (shared by `candor operator` and `python -m candor_operator`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import kopf

from candor_operator.handlers import CandorOperator, build_registry
from candor_operator.peering import ensure_cluster_peering, own_identity
from candor_operator.settings import OperatorSettings


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, verbose: bool) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        # kopf logs every handler run ("Handler 'service' succeeded") for every watched object; Candor logs
        # what it changed itself, so keep kopf's per-object chatter for --verbose.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def run_operator(
    settings: OperatorSettings, kubeconfig: str | None = None, log_format: str = "text", verbose: bool = False
) -> None:
    configure_logging(log_format, verbose)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    if settings.peering and not settings.standalone:
        own_identity()  # fixes the identity kopf announces, so the metrics can tell whether this replica is active
        asyncio.run(ensure_cluster_peering(settings.peering, kubeconfig))
    operator = CandorOperator(settings, kubeconfig)
    registry = build_registry(operator)
    kopf.run(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        # The peering name is set at startup (handlers.CandorOperator.configure), not here: kopf.run's
        # peering_name makes peering mandatory, which would pause a cluster without kopf's peering CRD.
        standalone=settings.standalone or not settings.peering,
        liveness_endpoint=settings.liveness,
    )
