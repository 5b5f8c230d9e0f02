"""Operator-wide settings, from `candor operator` options and CANDOR_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from candor_operator.injection import SidecarSettings


@dataclass(frozen=True)
class WebhookSettings:
    enabled: bool = True
    listen: str = "0.0.0.0"
    port: int = 9443
    path: str = "/candor"
    host: str | None = None  # the host name the API server uses, when the operator manages the configuration
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    managed: str | None = None  # name of a MutatingWebhookConfiguration kopf keeps up to date (off by default)


@dataclass(frozen=True)
class OperatorSettings:
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    resync_seconds: float = 60.0
    lookup_timeout: float = 2.0  # API lookups made while the API server waits on the webhook
    peering: str | None = "candor"
    standalone: bool = False
    priority: int | None = None  # None: random, so exactly one of several replicas is active
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    metrics: str | None = None  # e.g. http://0.0.0.0:8081/metrics (candor_operator.metrics_server)
    readiness: str | None = None  # e.g. http://0.0.0.0:8081/readyz (readiness.py)


def sidecar_settings(image: str, pull_policy: str = "IfNotPresent") -> SidecarSettings:
    return SidecarSettings(image=image, image_pull_policy=pull_policy)
