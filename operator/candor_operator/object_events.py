"""Events on the Services and Deployments Candor changes outside a policy's reconcile, and on the pods whose
drain it reports (candor_operator.drain_events).

Those objects are followed by candor_operator.informer, outside kopf's handlers, where `kopf.event` has no
queue to post to; these Events are the same as kopf's (reason, message, type, the reporting component), posted
with the operator's own client. Posting never fails the change it reports: an Event that cannot be written is
logged and dropped, as kopf does.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from candor_operator.kube import ApiError, KubeClient, path_for

logger = logging.getLogger("candor.operator")

COMPONENT = "candor-operator"
MAX_MESSAGE = 1024  # the API server refuses longer messages


async def post(client: KubeClient, obj: Mapping[str, Any], type: str, reason: str, message: str,
               name: str | None = None, action: str = "Annotate") -> bool:
    """A core/v1 Event about `obj` (a whole object as watched: apiVersion, kind, metadata); whether it was
    written. `name`: the Event's own name, for an Event said once only: a second post of it (another replica,
    a restarted operator) finds it there and writes nothing."""
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    now = datetime.datetime.now(datetime.UTC).isoformat()
    body = {
        "metadata": {"namespace": namespace, **({"name": name} if name else {"generateName": "candor-"})},
        "type": type, "reason": reason, "message": message[:MAX_MESSAGE], "action": action,
        "reportingComponent": COMPONENT, "reportingInstance": COMPONENT, "source": {"component": COMPONENT},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "namespace": namespace,
                           "name": metadata.get("name"), "uid": metadata.get("uid")},
        "firstTimestamp": now, "lastTimestamp": now, "eventTime": now,
    }
    try:
        await client.create(path_for("v1", "events", namespace), body)
    except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
        if isinstance(error, ApiError) and error.namespace_terminating:
            return False  # the object and its Events are going with the namespace: nothing to tell anyone
        if isinstance(error, ApiError) and error.status == 409 and name:
            return False  # said already
        logger.warning("Event %s on %s %s/%s not posted: %s", reason, obj.get("kind"), namespace,
                       metadata.get("name"), error)
        return False
    return True
