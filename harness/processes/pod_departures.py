"""How pods leave in the departures benchmark (bench/departures.py): each way, run against every cell of a
namespace while the load runs, and a watch of when each pod was first seen deleted and gone.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness.cluster.control_plane import K8sCluster
from harness.cluster.node import Node
from harness.processes.haproxy_reload import ReloadableHAProxy
from harness.processes.long_requests import LongRequests

REPLICAS = 3
LONG_SECONDS = 20.0


@dataclass
class PodWatch:
    """When each pod of a namespace was first seen deleted and first seen gone (polled every 0.2 s)."""

    cluster: K8sCluster
    namespace: str
    deleted: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    cell_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            listed = self.cluster.api("GET", f"/api/v1/namespaces/{self.namespace}/pods")
            if listed.status == 200:
                present = set()
                for pod in listed.body["items"]:
                    name = pod["metadata"]["name"]
                    present.add(name)
                    self.cell_of[name] = pod["metadata"]["labels"].get("app", "")
                    if pod["metadata"].get("deletionTimestamp"):
                        self.deleted.setdefault(name, now)
                for name in set(self.cell_of) - present:
                    self.gone.setdefault(name, now)
            self._stop.wait(0.2)

    def all_gone(self, pods: list[str]) -> bool:
        return all(pod in self.gone for pod in pods)

    def all_deleted(self, pods: list[str]) -> bool:
        return all(pod in self.deleted for pod in pods)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Front:
    """One HAProxy in front of the cells: its frontend port per cell, and the process (for a reload)."""

    ports: dict[str, int]
    haproxy: ReloadableHAProxy


def ready_replicas(cluster: K8sCluster, namespace: str, cells: list[str], replicas: int) -> None:
    def settled() -> bool:
        for name in cells:
            status = cluster.api("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}").body
            want = status.get("spec", {}).get("replicas")
            state = status.get("status", {})
            if want != replicas or any(state.get(key) != replicas for key in ("replicas", "readyReplicas",
                                                                              "updatedReplicas")):
                return False
        pods = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods").ok()["items"]
        return len(pods) == replicas * len(cells)  # no leaving pod is still terminating

    cluster.wait_until(settled, 300, f"{replicas} ready replicas of each cell and no pod terminating")


def scale(cluster: K8sCluster, namespace: str, cells: list[str], replicas: int) -> None:
    cluster.kubectl("scale", "-n", namespace, f"--replicas={replicas}", *[f"deployment/{c}" for c in cells])
    ready_replicas(cluster, namespace, cells, replicas)


@dataclass
class Departure:
    """One way pods leave, run against every cell of a namespace while the load runs."""

    cluster: K8sCluster
    namespace: str
    cells: list[str]
    first: Node
    fronts: list[Front]
    watch: PodWatch
    long: dict[str, LongRequests] = field(default_factory=dict)

    @property
    def deployments(self) -> list[str]:
        return [f"deployment/{cell}" for cell in self.cells]

    def _pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.api("GET", f"/api/v1/namespaces/{self.namespace}/pods").ok()["items"]
        return sorted(items, key=lambda pod: pod["metadata"]["name"])

    def _delete(self, pods: list[str]) -> None:
        self.cluster.kubectl("delete", "pod", "-n", self.namespace, "--wait=false", *pods)

    def rollout(self) -> None:
        self.cluster.kubectl("rollout", "restart", "-n", self.namespace, *self.deployments)
        ready_replicas(self.cluster, self.namespace, self.cells, REPLICAS)

    def scale(self) -> None:
        scale(self.cluster, self.namespace, self.cells, 1)
        scale(self.cluster, self.namespace, self.cells, REPLICAS)

    def delete(self) -> None:
        one = {pod["metadata"]["labels"]["app"]: pod["metadata"]["name"] for pod in self._pods()}
        self._delete(list(one.values()))
        ready_replicas(self.cluster, self.namespace, self.cells, REPLICAS)

    def reload(self) -> None:
        """`delete`, and every HAProxy reloaded once the deleted pods' drains are under way."""
        one = {pod["metadata"]["labels"]["app"]: pod["metadata"]["name"] for pod in self._pods()}
        self._delete(list(one.values()))
        self.cluster.wait_until(lambda: self.watch.all_deleted(list(one.values())), 30, "the deletions seen")
        time.sleep(1.0)  # the drains have begun (the preStop hooks run within this) and have not ended
        for front in self.fronts:
            front.haproxy.reload()
        ready_replicas(self.cluster, self.namespace, self.cells, REPLICAS)

    def long_requests(self) -> None:
        """`delete` of the pod holding a 20 s request and a 20 s stream of each cell; they must complete."""
        held = {}
        for cell in self.cells:
            pod = next(p for p in self._pods() if p["metadata"]["labels"]["app"] == cell)
            long = LongRequests(self.fronts[0].ports[cell], pod["status"]["podIP"], LONG_SECONDS)
            long.land_on_the_pod()
            self.long[cell], held[cell] = long, pod["metadata"]["name"]
        self._delete(list(held.values()))
        ready_replicas(self.cluster, self.namespace, self.cells, REPLICAS)
        for long in self.long.values():
            long.wait(LONG_SECONDS + 30)

    def node_drain(self) -> None:
        # --delete-emptydir-data: an injected pod has the sidecar's state volume (an emptyDir; its journals are
        # folded into the final scrape at termination), which kubectl drain refuses to evict without it.
        self.cluster.kubectl("drain", self.first.name, f"--pod-selector=app in ({','.join(self.cells)})",
                             "--timeout=600s", "--delete-emptydir-data", timeout=620)
        ready_replicas(self.cluster, self.namespace, self.cells, REPLICAS)
        self.cluster.kubectl("uncordon", self.first.name)

    def single_rollout(self) -> None:
        """A one-replica Deployment rolled (scaled to one before, and back to three after, by `_run_way`)."""
        self.cluster.kubectl("rollout", "restart", "-n", self.namespace, *self.deployments)
        ready_replicas(self.cluster, self.namespace, self.cells, 1)

    def recreate(self) -> None:
        def strategy(kind: dict[str, Any]) -> None:
            for deployment in self.deployments:  # the strategy is not in the pod template: patching it rolls nothing
                self.cluster.kubectl("patch", "-n", self.namespace, deployment, "--type=merge",
                                     "-p", json.dumps({"spec": {"strategy": kind}}))

        strategy({"type": "Recreate", "rollingUpdate": None})
        self.cluster.kubectl("rollout", "restart", "-n", self.namespace, *self.deployments)
        ready_replicas(self.cluster, self.namespace, self.cells, REPLICAS)
        strategy({"type": "RollingUpdate"})

    def run(self, kind: str) -> None:
        getattr(self, kind.replace("-", "_"))()
