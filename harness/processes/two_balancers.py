"""A pod as two real HAProxys see it: an app, its sidecar, and two HAProxys polling the agent and checking
/health from two source addresses (two load balancers to the sidecar), both seeing the server UP after an
agent poll. Shared by the tests of how a drain's wait ends and of the summary it leaves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from candor_demo.haproxy_process import HAProxyProcess
from harness.processes.ports import free_port
from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

SOURCES = {"lb1": "127.0.0.2", "lb2": "127.0.0.3"}
AGENT_INTER = 1.0
SIDECAR_CONFIG = {"slowStart": "0s", "evaluationInterval": "200ms", "finalScrapeTimeout": "1s",
                  "drain": {"agentInterval": f"{AGENT_INTER:g}s", "maxWait": "10s"}}


def haproxy_config(app: AppProcess, sidecar: SidecarProcess, source: str, agent_inter: float = AGENT_INTER,
                   check_inter: str = "500ms") -> str:
    """One HAProxy in front of the app, checking the sidecar's /health and polling its agent from `source`."""
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
    server s1 127.0.0.1:{app.port} weight 100 check port {sidecar.http_port} inter {check_inter} rise 1 fall 3 \
source {source} agent-check agent-addr 127.0.0.1 agent-port {sidecar.agent_port} agent-inter {agent_inter:g}s
"""


@contextmanager
def polled_pod(state_dir: Path, sidecar_args: Sequence[str] = ()
               ) -> Iterator[tuple[SidecarProcess, dict[str, HAProxyProcess]]]:
    """The app, its sidecar (with `sidecar_args`) and the two HAProxys, once both have polled the agent."""
    with ExitStack() as stack:
        app = stack.enter_context(AppProcess(state_dir, "s1"))
        sidecar = stack.enter_context(SidecarProcess(state_dir, config=SIDECAR_CONFIG, args=list(sidecar_args)))
        balancers = {name: stack.enter_context(HAProxyProcess(haproxy_config(app, sidecar, source)))
                     for name, source in SOURCES.items()}

        def polled() -> bool:
            states = [lb.server_state("app", "s1") for lb in balancers.values()]
            return all(s.base_status == "UP" and s.agent_status.startswith("L7") for s in states)

        wait_until(polled, 20, "both HAProxys to see s1 UP after an agent poll")
        yield sidecar, balancers
