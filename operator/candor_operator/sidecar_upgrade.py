"""Rolling governed Deployments onto a new sidecar one at a time, after a `helm upgrade` changed it.

A new release (or sidecar image) changes every policy's config hash at once; restarting every
`rollout: Automatic` Deployment at that moment would replace most of a cluster's pods together. So a
Deployment whose pods run a sidecar of another release or image (pod_census.on_old_sidecar) is not
restarted where it is seen but put in this queue, and the queue restarts one Deployment at a time: the
next only once no governed Deployment carrying the current hash is still rolling out, that is the
Deployment controller reports its rollout complete (the test `kubectl rollout status` makes) or
given up (`ProgressDeadlineExceeded`, after the Deployment's own progressDeadlineSeconds). The restart
is the same template annotation patch as any other, so each Deployment's strategy (maxSurge,
maxUnavailable, minReadySeconds) paces its own pods.

Nothing here needs to survive the process: which Deployments wait is found again from their pods as
the operator's Deployment cache lists them at start, and which one is rolling out from the Deployments'
template hash and status.
Only the moment between a restart's patch and its watch event is held in memory (`_restarted`), so a
second Deployment is not started on a cache entry that does not show the first one's patch yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Key = tuple[str, str]  # (namespace, name)
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
# A watch event normally follows a patch within milliseconds; past this, someone else changed the template too.
PATCH_SEEN_WITHIN = 30.0


def rollout_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the Deployment cache keeps of a Deployment to tell whether its rollout has finished."""
    metadata, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    progressing = next((c for c in status.get("conditions") or []
                        if isinstance(c, Mapping) and c.get("type") == "Progressing"), {})
    return {
        "generation": metadata.get("generation") or 0,
        "observed": status.get("observedGeneration") or 0,
        "desired": spec.get("replicas", 1),
        "replicas": status.get("replicas") or 0,
        "updated": status.get("updatedReplicas") or 0,
        "available": status.get("availableReplicas") or 0,
        "gave_up": progressing.get("status") == "False" and progressing.get("reason") == DEADLINE_EXCEEDED,
        "paused": bool(spec.get("paused")),  # a paused Deployment does not roll out, nor time out
    }


def rollout_finished(fields: Mapping[str, Any]) -> bool:
    """The rollout of the Deployment's current template is complete, its progress deadline was exceeded, or
    it is paused (and will not roll out until someone resumes it).

    Complete as `kubectl rollout status` judges it: the controller has seen the current generation, every
    desired replica runs the new template and is available, and no pod of an older ReplicaSet is left.
    """
    if not fields or fields.get("observed", 0) < fields.get("generation", 0):
        return False
    if fields.get("gave_up") or fields.get("paused"):
        return True
    updated = int(fields.get("updated") or 0)
    return (updated >= int(fields.get("desired") or 0) and int(fields.get("replicas") or 0) <= updated
            and int(fields.get("available") or 0) >= updated)


class UpgradeQueue:
    """The Deployments waiting to be restarted onto the current sidecar, and which one may go next."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._waiting: set[Key] = set()
        self._restarted: dict[Key, tuple[str, float]] = {}  # restarted here -> (hash patched, until when to wait)
        self._clock = clock
        self.lock = asyncio.Lock()  # one choice at a time: two handlers must not both see nothing in flight

    def wait(self, key: Key) -> None:
        self._waiting.add(key)

    def forget(self, key: Key) -> None:
        self._waiting.discard(key)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def restarted(self, key: Key, config_hash: str) -> None:
        self._waiting.discard(key)
        self._restarted[key] = (config_hash, self._clock() + PATCH_SEEN_WITHIN)

    def choose(self, deployments: Iterable[tuple[Mapping[str, Any], str | None]]) -> Mapping[str, Any] | None:
        """The Deployment to restart now, or None while a rollout is under way (or none waits).

        `deployments`: every cached Deployment with the config hash its `rollout: Automatic` policy
        wants (None for a Deployment no such policy governs). A waiting Deployment that no longer needs a
        restart (gone, made Manual, restarted by something else) leaves the queue here.
        """
        current: dict[Key, tuple[Mapping[str, Any], str | None]] = {
            (str(d["namespace"]), str(d["name"])): (d, wanted) for d, wanted in deployments}
        self._waiting = {key for key in self._waiting
                         if key in current and current[key][1] not in (None, current[key][0].get("hash"))}
        now = self._clock()
        for key, (patched, until) in list(self._restarted.items()):
            if key in current and current[key][0].get("hash") != patched and now < until:
                return None  # the cache has not seen our patch yet: that rollout is under way
            del self._restarted[key]  # seen (its own status speaks for it now), gone, or changed by someone else
        for deployment, wanted in current.values():
            if wanted is not None and deployment.get("hash") == wanted and not rollout_finished(deployment["rollout"]):
                return None
        if not self._waiting:
            return None
        return current[min(self._waiting)][0]
