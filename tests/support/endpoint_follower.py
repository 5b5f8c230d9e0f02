"""An emulation of how an HAProxy ingress controller keeps a backend's servers in step with a Service.

haproxytech/kubernetes-ingress (and haproxy-ingress in its dynamic mode) cannot be built here, so benches
and tests that compare "a pod leaves through Kubernetes" with "a pod leaves through Candor's agent" use this
stand-in, which does what those controllers do at run time:

* the backend is rendered with pre-declared server slots (``server SRV_1 127.0.0.1:1 disabled``), so a
  new pod never needs a reload;
* each ready endpoint of the Service's EndpointSlices gets a slot through the runtime API:
  ``set server <backend>/<slot> addr <ip> port <port>`` then ``set server <backend>/<slot> state ready``;
* a slot whose endpoint left the slices, or is no longer ready (failed readiness probe, terminating), is
  put in ``maint`` at once.

The controllers watch the API; this follower polls the EndpointSlices every ``interval`` (0.1 s), close
enough to a watch's latency for a comparison measured in seconds. Every change is logged with its time.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from candor_demo.haproxy_process import HAProxyProcess


def declare_slots(backend: str, count: int) -> str:
    """A rendered backend section with its server lines replaced by ``count`` disabled slots."""
    kept = [line for line in backend.splitlines() if not re.match(r"\s+server\s", line)]
    slots = [f"    server SRV_{i} 127.0.0.1:1 disabled" for i in range(1, count + 1)]
    return "\n".join(kept + slots) + "\n"


@dataclass
class FollowerEvent:
    at: float  # time.monotonic()
    slot: str
    address: str
    action: str  # "ready" or "maint"


@dataclass
class EndpointSliceFollower:
    cluster: Any  # tests.support.k8s_cluster.K8sCluster
    haproxy: HAProxyProcess
    namespace: str
    service: str
    backend: str
    slots: int
    port_name: str | None = None
    interval: float = 0.1
    events: list[FollowerEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._slot_of: dict[str, str] = {}  # address -> slot
        self._free = [f"SRV_{i}" for i in range(1, self.slots + 1)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{self.service}", daemon=True)

    def __enter__(self) -> EndpointSliceFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def slot_for(self, address: str) -> str | None:
        return self._slot_of.get(address)

    def _ready_endpoints(self) -> dict[str, int]:
        body = self.cluster.api(
            "GET", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices",
            params={"labelSelector": f"kubernetes.io/service-name={self.service}"},
        ).ok()
        ready: dict[str, int] = {}
        for endpoint_slice in body.get("items", []):
            ports = endpoint_slice.get("ports") or []
            port = next((p["port"] for p in ports if self.port_name in (None, p.get("name"))), None)
            if port is None:
                continue
            for endpoint in endpoint_slice.get("endpoints") or []:
                conditions = endpoint.get("conditions", {})
                # The controllers route to ready endpoints only; a terminating one is never ready.
                if conditions.get("ready") and not conditions.get("terminating"):
                    for address in endpoint.get("addresses", []):
                        ready[address] = int(port)
        return ready

    def _apply(self, ready: dict[str, int]) -> None:
        for address, slot in list(self._slot_of.items()):
            if address not in ready:
                self.haproxy.command(f"set server {self.backend}/{slot} state maint")
                self.events.append(FollowerEvent(time.monotonic(), slot, address, "maint"))
                del self._slot_of[address]
                self._free.append(slot)
        for address, port in ready.items():
            if address in self._slot_of or not self._free:
                continue
            slot = self._free.pop(0)
            self.haproxy.command(f"set server {self.backend}/{slot} addr {address} port {port}")
            self.haproxy.command(f"set server {self.backend}/{slot} state ready")
            self._slot_of[address] = slot
            self.events.append(FollowerEvent(time.monotonic(), slot, address, "ready"))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply(self._ready_endpoints())
            except Exception as error:  # a blip of the API or the socket: try again at the next turn
                self.errors.append(repr(error))
            self._stop.wait(self.interval)
