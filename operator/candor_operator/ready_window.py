"""How long a new governed pod stays Ready before its Deployment may retire an old one: minReadySeconds.

Ready is not yet "UP in every HAProxy". The EndpointSlice change reaches each ingress controller, which
fills a server slot through HAProxy's runtime API (or reloads it); the new server then starts DOWN until
`rise` checks pass (or, with haproxytech, shows UP at once and is taken DOWN if its first check fails),
and the agent's first poll, within one `agent-inter`, sets its weight. A Deployment retires an old pod
as soon as a new one is *available*, Ready for `minReadySeconds` (0 by default), so with the default
every old pod can be gone before any new one takes requests. The operator raises the minReadySeconds of
the governed Deployments it already watches to

    rise × httpCheck.interval + agentCheck.interval + PROPAGATION   (rounded up to whole seconds)

and never lowers a user's higher value. minReadySeconds is not part of the pod template, so changing it
restarts no pod; it makes each rollout step wait that much longer, nothing else. The value Candor set is
recorded in the Deployment's `candor.io/min-ready-seconds` annotation, for whoever wonders where it came from.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from candor_operator.api_names import MIN_READY_ANNOTATION
from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.policy_model import HealthPolicy

logger = logging.getLogger("candor.operator")

# The EndpointSlice controller, the controller's watch and its batching (haproxy-ingress waits 200 ms before
# a dynamic update) and one runtime-API update: about a second on an idle cluster; two leave room.
PROPAGATION = 2.0


def min_ready_seconds(policy: HealthPolicy) -> int:
    """The window between a pod's Ready and its first requests through every HAProxy, in whole seconds."""
    check = policy.http_check
    return math.ceil(check.rise * check.interval + policy.agent_check.interval + PROPAGATION)


def needs_raise(deployment: Mapping[str, Any], wanted: int | None) -> bool:
    """True when the Deployment's minReadySeconds is below what the policy needs."""
    return wanted is not None and int(deployment.get("min_ready") or 0) < wanted


async def ensure_min_ready(client: KubeClient, deployment: Mapping[str, Any], wanted: int | None) -> bool:
    """Raise the Deployment's minReadySeconds to `wanted` if lower; True when it was patched.

    The patch carries the resourceVersion it was decided from: a user raising it meanwhile gets a 409 for us,
    not a lower value, and the next event decides again.
    """
    if not needs_raise(deployment, wanted):
        return False
    namespace, name = str(deployment["namespace"]), str(deployment["name"])
    metadata: dict[str, Any] = {"annotations": {MIN_READY_ANNOTATION: str(wanted)}}
    if deployment.get("resource_version"):
        metadata["resourceVersion"] = deployment["resource_version"]
    patch = {"metadata": metadata, "spec": {"minReadySeconds": wanted}}
    try:
        await client.merge_patch(path_for("apps/v1", "deployments", namespace, name), patch)
    except ApiError as error:
        if error.status in (404, 409):  # gone, or changed since: the next event has the current state
            return False
        raise
    logger.info("Deployment %s/%s: minReadySeconds %s -> %d (new pods in every HAProxy before old ones leave)",
                namespace, name, deployment.get("min_ready") or 0, wanted)
    return True
