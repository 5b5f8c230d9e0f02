"""How many of a policy's governed pods run the sidecar, read from pod metadata alone.

Injection marks a pod with annotations (`candor.io/status: injected`, `candor.io/version`: the Candor
release whose webhook added the sidecar, and `candor.io/sidecar-image`), so counting needs no pod spec:
only labels (the policy's selector) and annotations. `read_pods` is the one place pods are read for this,
so it can move to metadata-only list requests without touching the counting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from candor_operator.api_names import SIDECAR_IMAGE_ANNOTATION, STATUS_ANNOTATION, VERSION_ANNOTATION
from candor_operator.injection import INJECTED
from candor_operator.kube import KubeClient, path_for
from candor_operator.labels import selector_to_query
from candor_sidecar.release import VERSION

# (client, namespace, label selector query) -> the pods' metadata (each item needs only "metadata").
PodReader = Callable[[KubeClient, str, str], Awaitable[list[dict[str, Any]]]]


async def read_pods(client: KubeClient, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    pods = await client.list_metadata(path_for("v1", "pods", namespace), label_selector=label_selector)
    return [{"metadata": pod.get("metadata") or {}} for pod in pods]


@dataclass(frozen=True)
class PodCensus:
    total: int
    with_sidecar: int
    other_version: int  # with a sidecar of another Candor release (or one that did not say), or another image

    @property
    def without_sidecar(self) -> int:
        return self.total - self.with_sidecar

    def as_status(self) -> dict[str, int]:
        return {"pods": self.total, "podsWithSidecar": self.with_sidecar,
                "podsWithoutSidecar": self.without_sidecar, "podsOtherSidecarVersion": self.other_version}


def sidecar_version(pod: Mapping[str, Any]) -> str | None:
    """The Candor release that injected the pod's sidecar; None without a sidecar, "" when it did not say."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(STATUS_ANNOTATION) != INJECTED:
        return None
    return str(annotations.get(VERSION_ANNOTATION) or "")


def on_old_sidecar(pod: Mapping[str, Any], version: str = VERSION, image: str | None = None) -> bool:
    """The pod runs a sidecar of another release than `version`, or (when `image` is given) another image.

    A pod injected before the image was recorded is judged by its release alone: a `helm upgrade` that
    changes the image without a new release is then noticed once those pods have been replaced.
    """
    found = sidecar_version(pod)
    if found is None:
        return False
    recorded = ((pod.get("metadata") or {}).get("annotations") or {}).get(SIDECAR_IMAGE_ANNOTATION)
    return found != version or (image is not None and recorded is not None and recorded != image)


def count(pods: Iterable[Mapping[str, Any]], version: str = VERSION, image: str | None = None) -> PodCensus:
    total = with_sidecar = other = 0
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue  # on its way out: neither a problem nor coverage
        total += 1
        if sidecar_version(pod) is not None:
            with_sidecar += 1
            other += on_old_sidecar(pod, version, image)
    return PodCensus(total, with_sidecar, other)


async def census(
    client: KubeClient, namespace: str, selector: Mapping[str, Any], read: PodReader = read_pods,
    image: str | None = None,
) -> PodCensus:
    """The governed pods of a selector in one namespace (raises FieldError or ApiError); `image`: the sidecar
    image the operator injects now, so pods given another one count as another version."""
    return count(await read(client, namespace, selector_to_query(selector)), image=image)
