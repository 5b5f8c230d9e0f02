"""The operator's own list-and-watch cache (candor_operator.informer) against the real API server: it lists in
pages, follows creations and deletions, and hands every object to its handler, whole, as a watch carries it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from candor_operator.credentials import connection_info
from candor_operator.informer import Informer
from candor_operator.kube import KubeClient, path_for
from candor_operator.services import slim_service
from harness.cluster.control_plane import K8sCluster

pytestmark = pytest.mark.integration


def service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"clusterIP": "None", "selector": {"app": name},
                                                 "ports": [{"port": 80, "targetPort": 8080}]}}


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_the_cache_lists_in_pages_and_follows_changes(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    for i in range(5):
        cluster.api("POST", f"/api/v1/namespaces/{ns}/services", service(f"s{i}")).ok()
    seen: list[tuple[str | None, str, str, str]] = []
    watching: list[str] = []

    async def handler(kind: str | None, body: dict[str, Any]) -> None:
        seen.append((kind, body["kind"], body["apiVersion"], body["metadata"]["name"]))

    def api(method: str, path: str, body: Any = None) -> Callable[[], Any]:
        return lambda: cluster.api(method, f"/api/v1/namespaces/{ns}/services{path}", body).ok()

    async def run() -> None:
        client = KubeClient(lambda: connection_info(str(cluster.kubeconfig)))
        informer = Informer("services", lambda: client, lambda scope: path_for("v1", "services", scope), [ns],
                            slim_service, handler, watching.append, page=2)
        informer.start()
        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            names = sorted(s["metadata"]["name"] for s in informer.get(ns) or [])
            assert names == [f"s{i}" for i in range(5)]  # three pages of two
            await eventually(lambda: len(seen) == 5, "the listed Services handed on")
            assert {entry[:3] for entry in seen} == {(None, "Service", "v1")}
            await eventually(lambda: watching == ["services"], "the watch accepted")

            await asyncio.to_thread(api("POST", "", service("s5")))
            await eventually(lambda: any(s["metadata"]["name"] == "s5" for s in informer.get(ns) or []), "s5 cached")
            await asyncio.to_thread(api("DELETE", "/s0"))
            await eventually(lambda: all(s["metadata"]["name"] != "s0" for s in informer.get(ns) or []), "s0 gone")
            await eventually(lambda: ("DELETED", "Service", "v1", "s0") in seen, "the deletion handed on")
            assert ("ADDED", "Service", "v1", "s5") in seen
            assert informer.get("elsewhere") is None
        finally:
            await informer.stop()
            await client.close()

    asyncio.run(run())


def test_a_listing_after_a_410_hands_on_what_was_deleted_in_the_gap(k8s_cluster: K8sCluster,
                                                                      k8s_namespace: str) -> None:
    """A watch too far behind (410 Gone) makes the cache list afresh; a Service deleted meanwhile left no watch
    event, so that listing is what tells the handlers (the upgrade queue would count it forever)."""
    cluster, ns = k8s_cluster, k8s_namespace
    for name in ("kept", "gone"):
        cluster.api("POST", f"/api/v1/namespaces/{ns}/services", service(name)).ok()
    seen: list[tuple[str | None, str]] = []

    async def handler(kind: str | None, body: dict[str, Any]) -> None:
        seen.append((kind, body["metadata"]["name"]))

    async def run() -> None:
        client = KubeClient(lambda: connection_info(str(cluster.kubeconfig)))
        informer = Informer("services", lambda: client, lambda scope: path_for("v1", "services", scope), [ns],
                            slim_service, handler)
        await informer._list(ns)  # as at start; no watch follows, as when it was cut off
        await asyncio.to_thread(lambda: cluster.api("DELETE", f"/api/v1/namespaces/{ns}/services/gone").ok())
        await informer._list(ns)  # what `_follow` does after a 410
        await eventually(lambda: ("DELETED", "gone") in seen, "the deletion handed on")
        assert sorted(s["metadata"]["name"] for s in informer.get(ns) or []) == ["kept"]
        assert [entry for entry in seen if entry[0] == "DELETED"] == [("DELETED", "gone")]
        await informer.stop()

    asyncio.run(run())
