"""The ports a governed pod serves on: what its sidecar checks before the pod may be Ready.

They come from the policy's Services that select the pod: each TCP port's `targetPort` (the `port` when
unset), a named one looked up among the pod's app containers' ports, as kube-proxy and the EndpointSlice
controller resolve it for this very pod. A name no app container declares is skipped: no endpoint of this
pod serves it either. Resolved at admission, per pod, so the sidecar needs no API access; a Service
changed afterwards reaches pods made afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from candor_operator.labels import TargetMatcher

MAX_PORTS = 16  # a connect per port per evaluation: bounded, whatever a Service lists


def _selects(service: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _named_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    named: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in (container.get("ports") if isinstance(container, Mapping) else None) or []:
            if isinstance(port, Mapping) and port.get("name") and (port.get("protocol") or "TCP") == "TCP":
                number = port.get("containerPort")
                if isinstance(number, int) and not isinstance(number, bool):
                    named.setdefault(str(port["name"]), number)
    return named


def _target(port: Mapping[str, Any], named: Mapping[str, int]) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, bool):
        return None
    if isinstance(target, int):
        return target if 1 <= target <= 65535 else None
    if isinstance(target, str):
        return int(target) if target.isdigit() and 1 <= int(target) <= 65535 else named.get(target)
    return None


def serving_ports(pod: Mapping[str, Any], services: Iterable[Mapping[str, Any]],
                  targets: TargetMatcher) -> tuple[int, ...]:
    """The TCP ports of `pod` that the Services the policy targets (`targets`) send traffic to, in order."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    named = _named_ports(pod)
    found: dict[int, None] = {}
    for service in services:
        if not (targets.matches(service) and _selects(service, labels)):
            continue
        for port in (service.get("spec") or {}).get("ports") or []:
            if isinstance(port, Mapping) and (port.get("protocol") or "TCP") == "TCP":
                number = _target(port, named)
                if number is not None:
                    found.setdefault(number, None)
    return tuple(found)[:MAX_PORTS]
