"""Bring one Service's Candor annotations to what the policies in its namespace decide.

Every write is a JSON merge patch that carries the resourceVersion the decision was made from: the
API server refuses it (409) if anyone changed the Service meanwhile (a user, another replica during a
hand-over), and the decision is re-made from a fresh read. So a user's concurrent edit is never
overwritten by a stale view, and repeating a reconcile after a crash only sends what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from candor_operator.api_names import GROUP
from candor_operator.claims import Decision, PolicyView, decide
from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.ownership import annotation_patch

logger = logging.getLogger(__name__)
_ATTEMPTS = 8


def service_path(namespace: str, name: str) -> str:
    return path_for("v1", "services", namespace, name)


# Every key Candor may write lives under one of these (candor_operator.render); other annotations, such as
# kubectl's last-applied-configuration, are never read and would only bloat an index of every Service.
RELEVANT_PREFIXES = (f"{GROUP}/", "haproxy.org/", "haproxy-ingress.github.io/")


def slim_service(body: Mapping[str, Any]) -> dict[str, Any]:
    """What decisions need from a Service (kept in the index instead of whole objects)."""
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "resourceVersion": metadata.get("resourceVersion"),
            "annotations": {k: v for k, v in annotations.items() if k.startswith(RELEVANT_PREFIXES)},
        },
        "spec": {
            "selector": dict((body.get("spec") or {}).get("selector") or {}),
            # What the injection needs to find a pod's serving ports (candor_operator.app_ports).
            "ports": [{key: port[key] for key in ("port", "targetPort", "protocol") if key in port}
                      for port in (body.get("spec") or {}).get("ports") or [] if isinstance(port, Mapping)],
        },
    }


async def reconcile_service(
    client: KubeClient, service: Mapping[str, Any], policies: Sequence[PolicyView],
    on_write: Callable[[Decision], None] | None = None,
) -> Decision | None:
    """Patch the Service to the decided owner's annotations; None when the Service no longer exists.

    `on_write` hears of each patch that was applied (the caller's Event about the change)."""
    metadata = service.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    current: Mapping[str, Any] = service
    for _ in range(_ATTEMPTS):
        decision = decide(current, policies)
        if decision.untouched:
            return decision
        current_meta = current.get("metadata") or {}
        patch = annotation_patch(current_meta.get("annotations"), decision.desired, decision.owner)
        if not patch:
            return decision
        body = {"metadata": {"resourceVersion": current_meta.get("resourceVersion"), "annotations": patch}}
        try:
            await client.merge_patch(service_path(namespace, name), body)
            logger.info("Service %s/%s annotations now follow %s", namespace, name, decision.owner or "no policy")
            if on_write is not None:
                on_write(decision)
            return decision
        except ApiError as error:
            if error.status == 404:
                return None
            if error.status != 409:
                raise
        fresh = await client.get_or_none(service_path(namespace, name))
        if fresh is None:
            return None
        current = fresh
    raise RuntimeError(f"Service {namespace}/{name} kept changing under {_ATTEMPTS} attempts; retrying later")
