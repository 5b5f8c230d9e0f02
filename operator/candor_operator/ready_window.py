"""How long a new governed pod stays Ready before its Deployment may retire an old one: minReadySeconds.

A Deployment retires an old pod as soon as a new one is *available*: Ready for `minReadySeconds` (0 by
default). A governed pod is not Ready before its app accepts connections on its serving ports (the native
sidecar's readiness, see serving), so what remains between its Ready and "taking requests in every HAProxy"
is the endpoint's propagation, and nothing the policy sets:

- The EndpointSlice controller publishes the new ready endpoint; each ingress controller's watch receives
  it, batches it (haproxy-ingress waits 200 ms before a dynamic update) and makes one runtime-API call.
- Both real controllers fill a slot with `set server B/S addr ...` then `set server B/S state ready`, and
  HAProxy starts a server leaving maintenance as UP ("start OK but check immediately" in its source:
  srv_clr_admin_flag sets check.health = rise), so the `rise` health checks add nothing. The agent's
  first poll only sets a weight: the server already takes requests at its configured weight.
  `slowStart` does not count either: it only ramps the weight of a server already in rotation. The one
  exception is not worth a longer window on every rollout: HAProxy keeps an agent's verdict across a
  slot's occupants (entering MAINT resets the health check, not the agent), so a slot whose last pod's
  agent said `down` (an unhealthy pod) comes UP for its new pod only at the agent's first poll, within
  one agentCheck.interval, while the other pods take the requests.
- The old pod's removal reaches each controller after the new pod's addition (one ordered EndpointSlice
  stream per controller), and the leaving pod keeps serving through its drain anyway (the drain waits
  until every HAProxy heard `drain` or took the server out).

So the operator raises the minReadySeconds of the governed Deployments it already watches to
ceil(PROPAGATION), and never lowers a user's higher value. minReadySeconds is not part of the pod
template, so changing it restarts no pod; it makes each rollout step wait that much longer, nothing else.
The value Candor set is recorded in the Deployment's `candor.io/min-ready-seconds` annotation, for whoever
wonders where it came from.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from candor_operator.api_names import MIN_READY_ANNOTATION
from candor_operator.kube import ApiError, KubeClient, path_for

logger = logging.getLogger("candor.operator")

# The EndpointSlice controller, the controller's watch and its batching (haproxy-ingress waits 200 ms before
# a dynamic update) and one runtime-API update: about a second on an idle cluster; two leave room.
PROPAGATION = 2.0
# The window between a governed pod's Ready and its first requests through every HAProxy, in whole seconds:
# the same for every valid policy (see above for why none of its checks' periods count).
MIN_READY_SECONDS = math.ceil(PROPAGATION)


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
