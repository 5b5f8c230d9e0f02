"""An emulation of how the real HAProxy ingress controllers keep a backend's servers in step with a Service.

Neither controller can be built here, so the benches and node tests run this stand-in. It sends HAProxy's
runtime API the commands each controller sends, read from their sources (what a reader should check
against when a controller changes; no code of theirs is here):

haproxytech/kubernetes-ingress v3.x (``HAPROXYTECH``)
    * endpoints: ``pkg/k8s/informers.go`` keeps an EndpointSlice endpoint only when ``conditions.ready`` is
      true and ``conditions.terminating`` is not: a terminating pod is dropped at once (it never reads
      ``serving``);
    * servers: ``pkg/service/endpoints.go`` pre-declares slots ``SRV_1``… at ``127.0.0.1:1`` in maintenance;
      ``pkg/haproxy/api/runtime.go`` (``SyncBackendSrvs``, ``SetServerAddrAndState``) fills a free slot with
      ``set server B/S addr IP port P;set server B/S state ready`` and empties one with
      ``set server B/S addr 127.0.0.1 port 1;set server B/S state maint``. So a leaving pod's slot is
      *re-addressed*: HAProxy's checks and agent polls go to the placeholder from then on, never to the pod.
      A new server is UP at once, before any check; a refused connection then fails it through the
      passive check (``observe``), the way the real one was seen to.

jcmoraisjr/haproxy-ingress v0.16 (``HAPROXY_INGRESS``)
    * servers: ``pkg/haproxy/dynupdate.go`` enables an endpoint with ``set server B/S addr IP port P``,
      ``set server B/S weight W``, ``set server B/S state ready`` (``drain`` when W is 0) and disables one
      with ``set server B/S state maint`` alone: the address stays, so HAProxy keeps polling the pod's agent
      in MAINT. It batches changes (``--wait-before-update``, 200 ms), hence ``interval`` 0.2 s here;
    * ``drain-support`` (``pkg/converters/ingress/ingress.go``): a terminating pod (it watches Pods'
      ``deletionTimestamp``; here the EndpointSlice's ``terminating`` condition, set from the same field) is
      kept at weight 0 (``state drain``) instead of being disabled: no new requests unless sticky.

Both also reload HAProxy for some changes (more slots, other config), a new process that loads the servers'
state from a file: see harness/processes/haproxy_reload.py.

The controllers watch the API; this follower polls the EndpointSlices every ``interval``, close enough to a
watch's latency for a comparison measured in seconds. Every change is logged with its time.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from candor_demo.haproxy_process import HAProxyProcess

HAPROXYTECH = "haproxytech"
HAPROXY_INGRESS = "haproxy-ingress"
CONTROLLERS = (HAPROXYTECH, HAPROXY_INGRESS)
PLACEHOLDER = ("127.0.0.1", 1)  # haproxytech's empty slot (haproxy-ingress parks its own at 127.0.0.1:1023)
BATCH = {HAPROXYTECH: 0.1, HAPROXY_INGRESS: 0.2}  # seconds between syncs (haproxy-ingress: wait-before-update)


def declare_slots(backend: str, count: int) -> str:
    """A rendered backend section with its server lines replaced by ``count`` slots in maintenance."""
    kept = [line for line in backend.splitlines() if not re.match(r"\s+server\s", line)]
    slots = [f"    server SRV_{i} {PLACEHOLDER[0]}:{PLACEHOLDER[1]} disabled" for i in range(1, count + 1)]
    return "\n".join(kept + slots) + "\n"


@dataclass(frozen=True)
class Endpoint:
    port: int
    terminating: bool = False  # kept only by haproxy-ingress's drain-support, at weight 0


def wanted_endpoints(slices: list[dict[str, Any]], controller: str, port_name: str | None = None,
                     drain_support: bool = True) -> dict[str, Endpoint]:
    """address -> Endpoint: the servers `controller` keeps for these EndpointSlices."""
    wanted: dict[str, Endpoint] = {}
    for endpoint_slice in slices:
        ports = endpoint_slice.get("ports") or []
        port = next((p["port"] for p in ports if port_name in (None, p.get("name"))), None)
        if port is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready, terminating = bool(conditions.get("ready")), bool(conditions.get("terminating"))
            if ready and not terminating:
                kept: Endpoint | None = Endpoint(int(port))
            elif terminating and controller == HAPROXY_INGRESS and drain_support:
                kept = Endpoint(int(port), terminating=True)
            else:
                kept = None
            if kept is not None:
                for address in endpoint.get("addresses") or []:
                    wanted[address] = kept
    return wanted


@dataclass
class FollowerEvent:
    at: float  # time.monotonic()
    slot: str
    address: str
    action: str  # "ready", "drain" (weight 0) or "maint"


@dataclass
class EndpointSliceFollower:
    cluster: Any  # harness.cluster.control_plane.K8sCluster, or anything with the same `api()`
    haproxy: HAProxyProcess
    namespace: str
    service: str
    backend: str
    slots: int
    port_name: str | None = None
    controller: str = HAPROXYTECH
    drain_support: bool = True  # haproxy-ingress's global `drain-support`
    weight: int = 100  # haproxy-ingress's `initial-weight` (Candor renders 100)
    interval: float | None = None  # None: the controller's own (BATCH)
    lag: float = 0.0  # seconds the controller acts behind what the EndpointSlices say (a slow controller)
    sync_lock: threading.Lock | None = None  # held by each sync (a reload holds it too: no change is lost)
    events: list[FollowerEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller: one of {', '.join(CONTROLLERS)}, got {self.controller!r}")
        self._slot_of: dict[str, str] = {}  # address -> slot
        self._state_of: dict[str, Endpoint] = {}  # address -> what its slot was set to
        self._free = [f"SRV_{i}" for i in range(1, self.slots + 1)]
        self._seen: list[tuple[float, dict[str, Endpoint]]] = []  # (when read, wanted), for `lag`
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

    def _read(self) -> dict[str, Endpoint]:
        body = self.cluster.api(
            "GET", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices",
            params={"labelSelector": f"kubernetes.io/service-name={self.service}"},
        ).ok()
        return wanted_endpoints(body.get("items", []), self.controller, self.port_name, self.drain_support)

    def _set(self, slot: str, *commands: str) -> None:
        for command in commands:
            answer = self.haproxy.command(f"set server {self.backend}/{slot} {command}").strip()
            if answer and not answer.startswith(("IP changed", "no need to change", "port changed")):
                self.errors.append(f"set server {self.backend}/{slot} {command}: {answer}")

    def _empty(self, slot: str) -> None:
        if self.controller == HAPROXYTECH:
            self._set(slot, f"addr {PLACEHOLDER[0]} port {PLACEHOLDER[1]}", "state maint")
        else:
            self._set(slot, "state maint")  # the address stays: HAProxy still polls that agent in MAINT

    def _fill(self, slot: str, address: str, endpoint: Endpoint) -> str:
        if self.controller == HAPROXYTECH:
            self._set(slot, f"addr {address} port {endpoint.port}", "state ready")
            return "ready"
        weight = 0 if endpoint.terminating else self.weight
        self._set(slot, f"addr {address} port {endpoint.port}", f"weight {weight}",
                  f"state {'drain' if weight == 0 else 'ready'}")
        return "drain" if weight == 0 else "ready"

    def apply(self, wanted: dict[str, Endpoint]) -> None:
        """One sync: empty the slots of endpoints no longer kept, update changed ones, fill free slots."""
        for address, slot in list(self._slot_of.items()):
            if address not in wanted:
                self._empty(slot)
                self.events.append(FollowerEvent(time.monotonic(), slot, address, "maint"))
                del self._slot_of[address], self._state_of[address]
                self._free.append(slot)
            elif wanted[address] != self._state_of[address]:
                action = self._fill(slot, address, wanted[address])
                self._state_of[address] = wanted[address]
                self.events.append(FollowerEvent(time.monotonic(), slot, address, action))
        for address, endpoint in wanted.items():
            if address in self._slot_of or not self._free:
                continue
            slot = self._free.pop(0)
            action = self._fill(slot, address, endpoint)
            self._slot_of[address], self._state_of[address] = slot, endpoint
            self.events.append(FollowerEvent(time.monotonic(), slot, address, action))

    def _due(self, now: float) -> dict[str, Endpoint] | None:
        """What the controller acts on now: the newest reading at least `lag` old."""
        due = None
        while self._seen and self._seen[0][0] <= now - self.lag:
            due = self._seen.pop(0)[1]
        return due

    def _run(self) -> None:
        interval = self.interval if self.interval is not None else BATCH[self.controller]
        while not self._stop.is_set():
            try:
                self._seen.append((time.monotonic(), self._read()))
                due = self._due(time.monotonic())
                if due is not None:
                    with self.sync_lock or contextlib.nullcontext():
                        self.apply(due)
            except Exception as error:  # a blip of the API or the socket: try again at the next turn
                self.errors.append(repr(error))
            self._stop.wait(interval)
