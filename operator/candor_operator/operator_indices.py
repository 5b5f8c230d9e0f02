"""The operator's kopf indices, shared by its handlers and its pod webhook: their names, one namespace's
slice of one, and the plain snapshots they keep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

POLICIES, SERVICES, DEPLOYMENTS = "candor_policies", "candor_services", "candor_deployments"


def namespace_slice(index: Any, namespace: str) -> list[Any]:
    """The values an index holds for one namespace (an absent key is an empty list)."""
    store = index.get(namespace) if index is not None else None
    return list(store) if store is not None else []


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf bodies are live views; decisions and indices keep plain snapshots."""
    return {key: body[key] for key in body}
