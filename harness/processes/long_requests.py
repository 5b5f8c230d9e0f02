"""A 20 s request and a 20 s streamed response held by one chosen pod, through HAProxy: what a pod's
departure must let finish (the demo app's `/slow` and `/stream`, harness/processes/drain_rig.py's app).

HAProxy picks the server, so requests are sent one at a time until one of each kind is in flight at the
chosen pod, asked directly (the host reaches every pod IP) at its `/inflight`; those that landed elsewhere
run to their end too, and count the same.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

KINDS = ("slow", "stream")
TRIES = 20  # requests per kind before giving up on landing one at the pod (HAProxy spreads them over 3)


@dataclass
class LongRequest:
    kind: str
    status: int = 0
    body: str = ""
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def complete(self) -> bool:
        """Answered whole: `/slow` with the pod's name, `/stream` down to its last line (`… 0.0`)."""
        if self.status != 200:
            return False
        lines = self.body.strip().splitlines()
        return bool(lines) and (self.kind == "slow" or lines[-1].endswith(" 0.0"))


@dataclass
class LongRequests:
    port: int  # the cell's frontend on HAProxy
    pod_ip: str  # the pod that must hold one of each kind
    seconds: float
    app_port: int = 8080
    requests: list[LongRequest] = field(default_factory=list)

    def _send(self, request: LongRequest) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.seconds + 30)
        try:
            connection.request("GET", f"/{request.kind}?seconds={self.seconds:g}")
            response = connection.getresponse()
            request.status, request.body = response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as failure:
            request.error = type(failure).__name__
        finally:
            connection.close()
            request.done.set()

    def _held(self) -> dict[str, int]:
        connection = http.client.HTTPConnection(self.pod_ip, self.app_port, timeout=5)
        try:
            connection.request("GET", "/inflight")
            counts: dict[str, int] = json.loads(connection.getresponse().read())
            return counts
        finally:
            connection.close()

    def land_on_the_pod(self) -> None:
        """Send each kind until the pod holds one; raises when HAProxy never picked it."""
        for kind in KINDS:
            for _ in range(TRIES):
                before = self._held().get(kind, 0)
                request = LongRequest(kind)
                self.requests.append(request)
                threading.Thread(target=self._send, args=(request,), daemon=True).start()
                # Landed here when the pod's count rises within a moment (or the request failed at once).
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and not request.done.is_set():
                    if self._held().get(kind, 0) > before:
                        break
                    time.sleep(0.05)
                else:
                    continue
                break
            else:
                raise RuntimeError(f"no /{kind} request reached pod {self.pod_ip} in {TRIES} tries")

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for request in self.requests:
            request.done.wait(max(0.0, deadline - time.monotonic()))

    def completed(self) -> int:
        return sum(request.complete for request in self.requests)

    def failures(self) -> list[str]:
        """The kind of failure of each long request that did not complete."""
        return [f"/{r.kind} " + ("cut short" if r.status == 200 else r.error or f"HTTP {r.status}")
                for r in self.requests if not r.complete]
