"""Whether the app accepts connections on the ports its Services send traffic to: the pod's readiness.

Kubernetes calls a pod Ready once each of its containers is; an app container without a readinessProbe
is ready as soon as it runs, before it listens. A controller then puts the pod in HAProxy (haproxytech's
shows it UP before any check), its first requests are refused, the passive check takes it DOWN, and
meanwhile the Deployment has retired an old pod because the new one was Ready. The injected sidecar, a
native sidecar whose readinessProbe counts for the pod, asks `/health/app` instead: this check, one TCP
connect per port at each evaluation, on 127.0.0.1 (the pod's containers share one network namespace) or
on `$POD_IP` for an app bound to the pod's address only.

A refused connection fails. A connect that times out (the app's accept queue is full) only warns: the app
is there but busy, and taking every busy pod out of rotation would leave no pod at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from candor_sidecar.checks import FAIL, PASS, WARN, CheckResult
from candor_tracer.pod_contract import POD_IP_ENV

KEY = "app:serving"
CONNECT_TIMEOUT = 0.5  # seconds; a connect on the pod's own addresses is answered in microseconds


def pod_addresses() -> tuple[str, ...]:
    """Where the app may listen: loopback, and the pod's IP (downward API `POD_IP`) when the injection gave it."""
    pod_ip = os.environ.get(POD_IP_ENV, "").strip()
    return ("127.0.0.1", pod_ip) if pod_ip and pod_ip != "127.0.0.1" else ("127.0.0.1",)


def _connect(address: str, port: int, timeout: float) -> str | None:
    """None when something accepted the connection, else what happened."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except TimeoutError:
        return "timeout"
    except OSError as error:
        return error.strerror or type(error).__name__


def serving_checks(ports: Sequence[int], addresses: Sequence[str] | None = None,
                   timeout: float = CONNECT_TIMEOUT) -> list[CheckResult]:
    """One `app:serving` result per port (none when no port is known)."""
    addresses = pod_addresses() if addresses is None else addresses
    results = []
    for port in ports:
        outcomes = {address: _connect(address, port, timeout) for address in addresses}
        tried = " or ".join(f"{address}:{port}" for address in addresses)
        accepted = [address for address, outcome in outcomes.items() if outcome is None]
        if accepted:
            results.append(CheckResult(KEY, PASS, f"{accepted[0]}:{port} accepts connections",
                                       component_id=str(port), component_type="component"))
        elif "timeout" in outcomes.values():
            results.append(CheckResult(KEY, WARN, f"{tried}: no connection accepted within {timeout:g}s (busy?)",
                                       component_id=str(port), component_type="component",
                                       reason=f"app port {port} slow to accept"))
        else:
            why = "; ".join(f"{address}: {outcome}" for address, outcome in outcomes.items())
            results.append(CheckResult(KEY, FAIL, f"the app does not accept connections on port {port} ({why})",
                                       component_id=str(port), component_type="component",
                                       reason=f"app port {port} refuses connections"))
    return results
