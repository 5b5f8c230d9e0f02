"""The `Drained` Event on a governed pod: how long its drain took and how each HAProxy's wait ended.

The sidecar holds no API credentials: it leaves its drain's summary in its container's termination message
(candor_sidecar.drain.summary), which the kubelet copies into the pod's status when the container exits. The
operator follows governed pods (label `candor.io/inject=true`, selected by the API server, so no other pod
reaches it) with its own list-and-watch cache, and once the sidecar container of a leaving pod (being deleted,
or ended: Succeeded, Failed, evicted) shows `terminated` with a summary (on the pod's last status update or its
deletion, whichever comes first) posts one Event on the pod:

    Normal   Drained  drain took 2.13s (begun by preStop), outcome removed: heard by 1, removed by 2, stopped
                      polling 0, not heard in time 0 (of 3 HAProxys). Every HAProxy heard drain or took ...

Warning when the outcome is `silent` or `timeout` (an HAProxy may have sent requests to the leaving pod), and
`DrainUnreadable` (Warning) when the sidecar's termination message is not a summary. The message's first
sentence is fixed (EVENT_PATTERN, read back by `read_event_message`) so a script can count how drains ended.

A sidecar container restarted alone in a running pod (a failed liveness probe) drains too, but the pod stays:
that is no departure, and posts nothing. Once per pod: the Event's name is the pod's name and uid, so a second
post (another event of the same pod, a restarted operator's listing, another replica) finds it there and
writes nothing. A standby replica posts none.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from candor_operator import metrics, object_events
from candor_operator.api_names import INJECT_LABEL
from candor_operator.injection import SIDECAR_NAME
from candor_operator.kube import KubeClient
from candor_sidecar.drain.summary import DrainSummary, SummaryError, parse_summary

logger = logging.getLogger("candor.operator")

GOVERNED_PODS = f"{INJECT_LABEL}=true"  # the pods' label selector: the pods the webhook sends Candor
REASON = "Drained"
UNREADABLE_REASON = "DrainUnreadable"
WARNING_OUTCOMES = ("silent", "timeout")  # an HAProxy may still have routed to the pod, untold
MEANINGS = {
    "heard": "Every HAProxy polling the agent heard drain.",
    "removed": "Every HAProxy heard drain or took the pod out of rotation (stopped polling the agent and "
               "checking /health).",
    "unpolled": "No HAProxy was polling the agent.",
    "silent": "An HAProxy stopped polling the agent but kept checking /health: it may have sent requests here "
              "without being told.",
    "timeout": "An HAProxy still polling had not heard drain when the wait gave up (drain.maxWait).",
}
AT_EXIT = ("The sidecar exited before the drain ended: the HAProxys still polling that had not heard drain count "
           "as not heard in time.")
EVENT_PATTERN = re.compile(
    r"drain took (?P<seconds>\d+(?:\.\d+)?)s \(begun by (?P<begun_by>\w+)\), outcome (?P<outcome>[a-z]+): "
    r"heard by (?P<heard>\d+), removed by (?P<removed>\d+), stopped polling (?P<silent>\d+), "
    r"not heard in time (?P<timed_out>\d+) \(of \d+ HAProxys?\)\.")
REMEMBERED = 4096  # pod uids this process posted for lately (the Event's name guards the rest)


@dataclass(frozen=True, slots=True)
class SlimPod:
    """What the cache keeps of a governed pod: who it is, whether it is leaving, and its sidecar's termination."""

    namespace: str
    name: str
    uid: str
    leaving: bool  # being deleted (deletionTimestamp), or ended (Succeeded, Failed)
    message: str | None  # the sidecar container's termination message, once it has terminated (else None)
    finished_at: str


def slim_pod(pod: Mapping[str, Any]) -> SlimPod:
    metadata = pod.get("metadata") or {}
    message, finished_at = None, ""
    status = pod.get("status") or {}
    # The native sidecar is an init container; a pod injected otherwise would list it with the others.
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if isinstance(container, Mapping) and container.get("name") == SIDECAR_NAME:
            terminated = (container.get("state") or {}).get("terminated")
            if isinstance(terminated, Mapping):
                message = str(terminated.get("message") or "")
                finished_at = str(terminated.get("finishedAt") or "")
            break
    leaving = bool(metadata.get("deletionTimestamp")) or status.get("phase") in ("Succeeded", "Failed")
    return SlimPod(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""),
                   str(metadata.get("uid") or ""), leaving, message, finished_at)


def event_message(summary: DrainSummary) -> str:
    balancers = summary.balancers
    return (f"drain took {summary.seconds:.2f}s (begun by {summary.begun_by}), outcome {summary.outcome}: "
            f"heard by {summary.heard}, removed by {summary.removed}, stopped polling {summary.silent}, "
            f"not heard in time {summary.timed_out} (of {balancers} HAProxy{'' if balancers == 1 else 's'}). "
            f"{AT_EXIT if summary.at_exit else MEANINGS[summary.outcome]}")


def drained_event(summary: DrainSummary) -> tuple[str, str, str]:
    """(type, reason, message) of the Event for `summary`."""
    kind = "Warning" if summary.outcome in WARNING_OUTCOMES else "Normal"
    return kind, REASON, event_message(summary)


def read_event_message(text: str) -> DrainSummary | None:
    """The figures of a `Drained` Event's message (None: not one), for scripts and benchmarks."""
    found = EVENT_PATTERN.match(text)
    if found is None:
        return None
    return DrainSummary(float(found["seconds"]), found["outcome"], found["begun_by"], int(found["heard"]),
                        int(found["removed"]), int(found["silent"]), int(found["timed_out"]), AT_EXIT in text)


def event_name(pod: SlimPod) -> str:
    """The Event's name, one per pod uid (a DNS subdomain of at most 253 characters, as the pod's name is)."""
    suffix = f".drained.{pod.uid}"
    return pod.name[:253 - len(suffix)].rstrip("-.") + suffix


class DrainEvents:
    """The pod cache's handler: posts each governed pod's Event once its sidecar has terminated with a summary.

    `standing_by`: whether this replica stands by (kopf's peering); it then posts nothing."""

    def __init__(self, client: Callable[[], KubeClient], standing_by: Callable[[], Awaitable[bool]]) -> None:
        self._client = client
        self._standing_by = standing_by
        self._posted: OrderedDict[str, None] = OrderedDict()  # pod uids already reported by this process

    async def pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        pod = slim_pod(body)
        if pod.uid in self._posted:
            if event_type == "DELETED":
                del self._posted[pod.uid]  # no later event of that pod will come
            return
        if not pod.message or not pod.uid:
            return  # running, or a sidecar that left no summary (another release, or killed first)
        if not (pod.leaving or event_type == "DELETED"):
            return  # the sidecar restarted alone: the pod stays
        if await self._standing_by():
            return
        try:
            summary = parse_summary(pod.message)
        except SummaryError as error:
            logger.warning("pod %s/%s: its sidecar's termination message is not a drain summary: %s",
                           pod.namespace, pod.name, error)
            kind, reason, message, outcome = ("Warning", UNREADABLE_REASON, "Candor's sidecar left a termination "
                                              f"message that is not a drain summary: {error}", "unreadable")
        else:
            if summary is None:
                return
            (kind, reason, message), outcome = drained_event(summary), summary.outcome
        reference = {"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}}
        if not await object_events.post(self._client(), reference, kind, reason, message, name=event_name(pod),
                                        action="Drain"):
            return  # not written (said already, or the API failed): the pod's next event looks again
        metrics.drain_event(outcome)
        logger.debug("pod %s/%s (sidecar exited %s): %s", pod.namespace, pod.name, pod.finished_at, message)
        self._posted[pod.uid] = None
        if len(self._posted) > REMEMBERED:
            self._posted.popitem(last=False)
