"""How a drain's wait ends for each real HAProxy: heard, removed, or silent, said in the wait's answer.

Two HAProxys poll one sidecar from two source addresses. When the drain begins, the second one changes
its server through the runtime API, as an ingress controller does when the endpoint turns not-ready:
both its checks stop (the server taken out: REMOVED), or only its agent check (SILENT: it still checks
/health, so it may still route here). The first keeps polling and hears `drain`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from candor_demo.haproxy_process import HAProxyProcess
from harness.processes.sidecar_process import SidecarProcess
from harness.processes.two_balancers import polled_pod

pytestmark = pytest.mark.integration

@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[SidecarProcess, dict[str, HAProxyProcess]]]:
    with polled_pod(tmp_path / "state") as (sidecar, balancers):
        yield sidecar, balancers


def _drain_with(sidecar: SidecarProcess, lb2: HAProxyProcess, commands: list[str]) -> str:
    """Begin the drain as the pod's deletion does, with lb2's controller acting at the same moment."""
    answer: dict[str, str] = {}

    def wait() -> None:
        answer["body"] = sidecar.get("/drain/wait", timeout=60)[2].decode()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    for command in commands:
        lb2.command(command)
    assert sidecar.run_drain().returncode == 0
    thread.join(30)
    assert not thread.is_alive()
    return answer["body"]


def test_a_haproxy_that_stops_checking_the_server_ends_as_removed(
        pod: tuple[SidecarProcess, dict[str, HAProxyProcess]]) -> None:
    sidecar, balancers = pod
    body = _drain_with(sidecar, balancers["lb2"], ["disable agent app/s1", "disable health app/s1"])
    assert body.startswith("drain heard by 1 load balancer(s) 127.0.0.2;"), body
    assert "removed by 1: 127.0.0.3" in body, body
    assert "silent" not in body, body


def test_a_haproxy_that_only_stops_polling_the_agent_ends_as_silent(
        pod: tuple[SidecarProcess, dict[str, HAProxyProcess]]) -> None:
    sidecar, balancers = pod
    body = _drain_with(sidecar, balancers["lb2"], ["disable agent app/s1"])
    assert body.startswith("drain heard by 1 load balancer(s) 127.0.0.2;"), body
    assert "silent by 1: 127.0.0.3" in body, body
    assert "removed" not in body, body
