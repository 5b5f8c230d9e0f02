"""The demo's HealthPolicy, and what Candor renders from it: the HAProxy config and each sidecar's config.

The HAProxy backend comes from `candor_operator.render.render_backend`, the same code behind `candor render`,
so the demo runs exactly what the operator would ask an ingress controller for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from candor_demo.settings import MEMORY_MAX_PERCENT, DemoSettings
from candor_operator.api_names import API_VERSION, KIND

BACKEND = "resizer"


@dataclass(frozen=True)
class ServerPorts:
    name: str
    app_port: int
    check_port: int  # the sidecar's HTTP port (/health)
    agent_port: int  # the sidecar's agent-check port


# Each instance's app runs in a CPU cgroup of its own, like a container: the agent lowers the weight of the
# one whose CPU is starved. CPU only: the resizer declares no worker capacity (its ten background workers
# are always busy, which says nothing about room for requests).
LOAD_WEIGHT = {"from": ["cpu"], "targetPercent": 70, "minPercent": 10}


def policy_document(settings: DemoSettings, load_weights: bool = True) -> dict[str, Any]:
    """The HealthPolicy a user would apply; written to demo-report/healthpolicy.yaml for `candor render -f`.

    Without `load_weights` (no per-instance CPU cgroups on this host) the agent keeps its weight off the CPU
    figures: every instance would then read the same host-wide CPU, which says nothing about one of them.
    """
    agent_check: dict[str, Any] = {"interval": settings.agent_interval}
    if load_weights:
        agent_check["weight"] = dict(LOAD_WEIGHT)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "resizer", "namespace": "demo"},
        "spec": {
            "selector": {"matchLabels": {"app": "resizer"}},
            "ingress": {"controller": "haproxytech", "services": ["resizer"]},
            "httpCheck": {"path": "/health", "interval": settings.http_interval, "rise": 2, "fall": 2},
            "agentCheck": agent_check,
            "memory": {"maxPercent": MEMORY_MAX_PERCENT},
            # Jobs here last up to 30 s; the deadlock check must not mistake them for hangs.
            "deadlock": {"heartbeatTimeout": "10s", "maxJobDuration": "2m"},
            "slowStart": settings.slow_start,
            "maxConn": 30,
            "queueTimeout": "5s",
            "passive": {"observe": "layer7", "errorLimit": 10, "onError": "mark-down"},
            "metrics": {"finalScrapeTimeout": settings.final_scrape_timeout},
        },
    }


def policy_yaml(settings: DemoSettings, load_weights: bool = True) -> str:
    return yaml.safe_dump(policy_document(settings, load_weights), sort_keys=False)


def _policy(settings: DemoSettings, load_weights: bool = True) -> Any:
    from candor_operator.policy import parse_policy

    return parse_policy(policy_document(settings, load_weights)["spec"])


def backend_section(settings: DemoSettings, servers: Sequence[ServerPorts]) -> str:
    """`render_backend` of the demo policy; ports per server because all three "pods" share 127.0.0.1."""
    from candor_operator.render import Server, render_backend

    return render_backend(_policy(settings), [
        Server(name=server.name, address=f"127.0.0.1:{server.app_port}", check_port=server.check_port,
               agent_port=server.agent_port) for server in servers], name=BACKEND)


def haproxy_config(settings: DemoSettings, servers: Sequence[ServerPorts], frontend_port: int,
                   stats_port: int) -> str:
    """A whole haproxy.cfg: the rendered backend, a frontend for the load, and a stats/exporter frontend."""
    return "\n".join([
        "global",
        "    log stdout format raw local0",  # server state changes land in HAProxy's log with reasons
        "    maxconn 2000",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "",
        "frontend load",
        f"    bind 127.0.0.1:{frontend_port}",
        "    option httplog",  # one line per request: status, server, timers and how it ended (a failure's cause)
        f"    default_backend {BACKEND}",
        "",
        "frontend stats",
        f"    bind 127.0.0.1:{stats_port}",
        "    no log",
        # HAProxy's built-in Prometheus exporter (USE_PROMEX, in Debian's 2.6 build).
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "",
        backend_section(settings, servers),
    ])


def sidecar_config(settings: DemoSettings, state_dir: str, http_port: int, agent_port: int,
                   load_weights: bool = True) -> dict[str, Any]:
    """`render_sidecar_config` of the policy, placed on this host: own state dir and ports, no downward API."""
    from candor_operator.render import render_sidecar_config

    config = render_sidecar_config(_policy(settings, load_weights))
    config.update({
        "stateDir": state_dir,
        "podInfoDir": None,
        "http": {"port": http_port, "address": "127.0.0.1"},
        "agent": {"port": agent_port, "address": "127.0.0.1"},
        # Sub-second evaluation so the memory fault reaches the agent well inside one agent interval.
        "evaluationInterval": f"{int(settings.evaluation_interval * 1000)}ms",
    })
    return config
