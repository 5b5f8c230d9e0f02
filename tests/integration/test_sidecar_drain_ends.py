"""How a drain's wait ends for each real HAProxy: heard, removed, or silent, said in the wait's answer.

Two HAProxys poll one sidecar from two source addresses. When the drain begins, the second one changes
its server through the runtime API, as an ingress controller does when the endpoint turns not-ready:
both its checks stop (the server taken out: REMOVED), or only its agent check (SILENT: it still checks
/health, so it may still route here). The first keeps polling and hears `drain`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from candor_demo.haproxy_process import HAProxyProcess
from harness.processes.ports import free_port
from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

SOURCES = {"lb1": "127.0.0.2", "lb2": "127.0.0.3"}
AGENT_INTER = 1.0


def _config(app: AppProcess, sidecar: SidecarProcess, source: str) -> str:
    return f"""
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend web
    bind 127.0.0.1:{free_port()}
    default_backend app

backend app
    option httpchk GET /health
    server s1 127.0.0.1:{app.port} weight 100 check port {sidecar.http_port} inter 500ms rise 1 fall 3 \
source {source} agent-check agent-addr 127.0.0.1 agent-port {sidecar.agent_port} agent-inter {AGENT_INTER:g}s
"""


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[SidecarProcess, dict[str, HAProxyProcess]]]:
    config = {"slowStart": "0s", "evaluationInterval": "200ms", "finalScrapeTimeout": "1s",
              "drain": {"agentInterval": f"{AGENT_INTER:g}s", "maxWait": "10s"}}
    with ExitStack() as stack:
        app = stack.enter_context(AppProcess(tmp_path / "state", "s1"))
        sidecar = stack.enter_context(SidecarProcess(tmp_path / "state", config=config))
        balancers = {name: stack.enter_context(HAProxyProcess(_config(app, sidecar, source)))
                     for name, source in SOURCES.items()}

        def polled() -> bool:
            states = [lb.server_state("app", "s1") for lb in balancers.values()]
            return all(s.base_status == "UP" and s.agent_status.startswith("L7") for s in states)

        wait_until(polled, 20, "both HAProxys to see s1 UP after an agent poll")
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
