"""What a HealthPolicy becomes: ingress annotations, an HAProxy backend section, the sidecar config.

Annotation names and value forms, as documented by each controller:
- haproxytech (haproxy.org/…): `check` ("true"), `check-http` (URI with method, `GET /health`),
  `check-interval`, `timeout-check` (time), `pod-maxconn` (number), `backend-config-snippet`
  (raw directives, inserted in the backend before its `server` lines). It has no Service-level
  key for rise/fall, the check port, the agent, the expected status or `timeout queue`
  (`timeout-queue` is ConfigMap-only there), so those go into the snippet.
- haproxy-ingress (haproxy-ingress.github.io/…): `health-check-uri` (the controller copies the value
  verbatim into `option httpchk <value>`; a bare URI would make HAProxy check with OPTIONS, which the
  sidecar refuses, so Candor writes `GET /health`), `health-check-port`, `health-check-interval`,
  `health-check-rise-count`, `health-check-fall-count`, `agent-check-port`, `agent-check-interval`,
  `initial-weight` (default 1: agent percentages need 100), `maxconn-server`, `timeout-queue`,
  and `config-backend` for what has no key (expected status, `timeout check`, passive checks).
Times are written in HAProxy's form (`500ms`, `2s`, `1m`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from candor_operator.policy_model import HealthPolicy
from candor_sidecar.config import parse_config
from candor_sidecar.durations import format_duration
from candor_tracer.pod_contract import PODINFO_DIR, STATE_DIR

HAPROXYTECH = "haproxytech"
HAPROXY_INGRESS = "haproxy-ingress"
_TECH = "haproxy.org/"
_HI = "haproxy-ingress.github.io/"

# Each controller's default balance algorithm (Candor sets none): what the preview backend uses.
BALANCE = {HAPROXYTECH: "roundrobin", HAPROXY_INGRESS: "random(2)"}
# haproxytech divides `pod-maxconn` among its controller pods (haproxy-ingress's maxconn-server does not).
POD_MAXCONN_NOTE = ("haproxy.org/pod-maxconn is divided by the number of haproxytech controller pods: "
                    "each HAProxy allows maxConn / replicas connections per pod")


def controller_notes(policy: HealthPolicy, controller: str | None = None) -> list[str]:
    """What a reader of the rendered annotations should know about how this controller applies them."""
    if _controller(policy, controller) == HAPROXYTECH and policy.max_conn is not None:
        return [POD_MAXCONN_NOTE]
    return []


# Every key Candor may write, per controller: reconcile removes the ones a new render no longer has.
CONTROLLER_ANNOTATIONS: dict[str, tuple[str, ...]] = {
    HAPROXYTECH: tuple(
        _TECH + key
        for key in ("check", "check-http", "check-interval", "timeout-check", "pod-maxconn", "backend-config-snippet")
    ),
    HAPROXY_INGRESS: tuple(
        _HI + key
        for key in (
            "health-check-uri", "health-check-port", "health-check-interval", "health-check-rise-count",
            "health-check-fall-count", "agent-check-port", "agent-check-interval", "initial-weight",
            "maxconn-server", "timeout-queue", "config-backend",
        )
    ),
}

AGENT_WEIGHT = 100  # HAProxy's default weight is 1, which no agent percentage can scale


@dataclass(frozen=True)
class Server:
    """One backend server for render_backend. The ports override the policy's check and agent ports,
    for tests that run several pods' sidecars on one host; in a cluster every pod has its own IP."""

    name: str
    address: str  # "ip:port" of the app
    check_port: int | None = None
    agent_port: int | None = None


# A connection refused by a pod that has just exited (before a check noticed) is retried on another server
# at once, instead of on the same one after a 1 s turn-around: the client never sees it.
REDISPATCH = "option redispatch 1"
# What HAProxy may retry (each retry on another server, by the redispatch above), from HAProxy 2.6's
# `retry-on`: `conn-failure` (the request was never sent: always safe, whatever the method) and
# `empty-response` (the server closed the connection without a byte of answer: a reused kept-alive server
# connection the pod closed as it left, or a pod that died under the request). The latter may have
# reached the app, so it is retried only for the methods RFC 9110 calls idempotent: `disable-l7-retry`
# leaves every other method (POST, PATCH, ...) to connection failures alone. Not retried: a response
# timeout (the app may still be working on it, and a retry doubles a slow request) and junk responses.
# L7 retries keep a copy of the request in a buffer: one larger than `tune.bufsize` is never retried.
RETRIES = (
    "retries 3",
    "retry-on conn-failure empty-response",
    "http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE TRACE }",
)


def _controller(policy: HealthPolicy, controller: str | None) -> str:
    chosen = controller or policy.ingress.controller
    if chosen not in CONTROLLER_ANNOTATIONS:
        raise ValueError(f"controller: must be one of {', '.join(CONTROLLER_ANNOTATIONS)}, got {chosen!r}")
    return chosen


def _t(seconds: float) -> str:
    return format_duration(seconds)


def _server_defaults(policy: HealthPolicy, *, with_checks: bool, with_agent: bool) -> str:
    """The `default-server` keywords; the ones a controller writes itself from its own keys are left out."""
    check = policy.http_check
    words: list[str] = []
    if with_checks:
        words += ["check", "port", str(check.port), "inter", _t(check.interval), "rise", str(check.rise),
                  "fall", str(check.fall)]
    if with_agent:
        words += ["agent-check", "agent-port", str(policy.agent_check.port),
                  "agent-inter", _t(policy.agent_check.interval), "weight", str(AGENT_WEIGHT)]
    # No HAProxy `slowstart`: the sidecar's agent ramps its weight over slowStart (new pods too, which
    # slowstart skips). Both together multiply (49 % of a weight already at 40 % of its ramp), and
    # slowstart would also scale maxconn while it lasts.
    if policy.passive is not None:
        words += ["observe", policy.passive.observe, "error-limit", str(policy.passive.error_limit),
                  "on-error", policy.passive.on_error]
    return "default-server " + " ".join(words) if words else ""


def render_annotations(policy: HealthPolicy, controller: str | None = None) -> dict[str, str]:
    """The Service annotations for the policy's (or the given) ingress controller."""
    chosen = _controller(policy, controller)
    check = policy.http_check
    if chosen == HAPROXYTECH:
        snippet = [f"http-check expect status {check.expect_status}", REDISPATCH, *RETRIES]
        if policy.queue_timeout is not None:
            snippet.append(f"timeout queue {_t(policy.queue_timeout)}")
        # `check` itself comes from haproxy.org/check; the rest has no Service-level key.
        snippet.append(
            "default-server "
            + " ".join(["port", str(check.port), "rise", str(check.rise), "fall", str(check.fall)])
            + " "
            + _server_defaults(policy, with_checks=False, with_agent=True).removeprefix("default-server ")
        )
        annotations = {
            _TECH + "check": "true",
            _TECH + "check-http": f"GET {check.path}",
            _TECH + "check-interval": _t(check.interval),
            _TECH + "timeout-check": _t(check.effective_timeout),
            _TECH + "backend-config-snippet": "\n".join(snippet) + "\n",
        }
        if policy.max_conn is not None:
            annotations[_TECH + "pod-maxconn"] = str(policy.max_conn)
        return annotations

    config_backend = [f"http-check expect status {check.expect_status}", f"timeout check {_t(check.effective_timeout)}",
                      REDISPATCH, *RETRIES]
    defaults = _server_defaults(policy, with_checks=False, with_agent=False)
    if defaults:
        config_backend.append(defaults)
    annotations = {
        _HI + "health-check-uri": f"GET {check.path}",
        _HI + "health-check-port": str(check.port),
        _HI + "health-check-interval": _t(check.interval),
        _HI + "health-check-rise-count": str(check.rise),
        _HI + "health-check-fall-count": str(check.fall),
        _HI + "agent-check-port": str(policy.agent_check.port),
        _HI + "agent-check-interval": _t(policy.agent_check.interval),
        _HI + "initial-weight": str(AGENT_WEIGHT),
        _HI + "config-backend": "\n".join(config_backend) + "\n",
    }
    if policy.max_conn is not None:
        annotations[_HI + "maxconn-server"] = str(policy.max_conn)
    if policy.queue_timeout is not None:
        annotations[_HI + "timeout-queue"] = _t(policy.queue_timeout)
    return annotations


def render_backend(
    policy: HealthPolicy,
    servers: Sequence[Server] = (),
    *,
    name: str = "candor",
    controller: str | None = None,
) -> str:
    """The HAProxy `backend` section the annotations amount to (what `haproxy -c` can check)."""
    chosen = _controller(policy, controller)  # both controllers end up with the same section but for balance
    check = policy.http_check
    lines = [
        f"backend {name}",
        "    mode http",
        f"    balance {BALANCE[chosen]}",
        f"    option httpchk GET {check.path}",
        f"    http-check expect status {check.expect_status}",
        f"    timeout check {_t(check.effective_timeout)}",
        f"    {REDISPATCH}",
        *(f"    {line}" for line in RETRIES),
    ]
    if policy.queue_timeout is not None:
        lines.append(f"    timeout queue {_t(policy.queue_timeout)}")
    defaults = _server_defaults(policy, with_checks=True, with_agent=True)
    if policy.max_conn is not None:
        defaults += f" maxconn {policy.max_conn}"
    lines.append(f"    {defaults}")
    for server in servers:
        line = f"    server {server.name} {server.address}"
        if server.check_port is not None:
            line += f" port {server.check_port}"
        if server.agent_port is not None:
            line += f" agent-port {server.agent_port}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_sidecar_config(policy: HealthPolicy) -> dict[str, Any]:
    """The sidecar's YAML config, validated by the sidecar's own parser (candor_sidecar.config.parse_config)."""
    config: dict[str, Any] = {
        "stateDir": STATE_DIR,
        "podInfoDir": PODINFO_DIR,
        "http": {"port": policy.http_check.port},
        "agent": {"port": policy.agent_check.port},
        "memory": {"maxPercent": policy.memory.max_percent},
        "cpu": {"warnPercent": policy.cpu.warn_percent},
        "disk": {"paths": list(policy.disk.paths), "maxPercent": policy.disk.max_percent},
        "deadlock": {
            "heartbeatTimeout": _t(policy.deadlock.heartbeat_timeout),
            "maxJobDuration": _t(policy.deadlock.max_job_duration),
        },
        "slowStart": _t(policy.slow_start),
        # Fresh state for every agent poll: evaluate at least twice per agent interval, at most once a second.
        "evaluationInterval": _t(min(1.0, max(0.1, policy.agent_check.interval / 2))),
        "finalScrapeTimeout": _t(policy.metrics.final_scrape_timeout),
        "drain": {
            "agentInterval": _t(policy.agent_check.interval),
            "maxWait": _t(policy.drain.effective_max_wait(policy.agent_check.interval)),
        },
    }
    if policy.max_conn is not None:
        config["maxConn"] = policy.max_conn
    weight = policy.agent_check.weight
    if weight is not None:
        config["loadWeight"] = {"from": list(weight.from_), "targetPercent": weight.target_percent,
                                "minPercent": weight.min_percent, "stepPercent": weight.step_percent}
    _validate_with_sidecar(config)
    return config


def drain_summary(policy: HealthPolicy) -> str:
    """One line on what pod termination does under this policy (the preStop hooks the injection adds)."""
    if not policy.drain.enabled:
        return ("drain.enabled is false: no preStop hooks; the agent answers drain only once the app has exited "
                "and the sidecar gets SIGTERM")
    wait = _t(policy.drain.effective_max_wait(policy.agent_check.interval))
    return (f"the agent answers drain first; each app container's SIGTERM waits until every "
            f"HAProxy polling it has heard that or stopped polling (the server removed), at most {wait} "
            "(added to terminationGracePeriodSeconds)")


def weight_summary(policy: HealthPolicy) -> str:
    """One line on what the agent's weight follows under this policy."""
    ramp = f"ramps over slowStart {_t(policy.slow_start)}" if policy.slow_start > 0 else "no ramp (slowStart 0s)"
    weight = policy.agent_check.weight
    if weight is None:
        return f"{ramp}; load weights off (agentCheck.weight)"
    return (f"{ramp}, times a load factor from {' and '.join(weight.from_)}: full up to {weight.target_percent}% "
            f"load, down to {weight.min_percent}% at saturation, moved by {weight.step_percent} points or more")


def _validate_with_sidecar(config: dict[str, Any]) -> None:
    """The sidecar's own parser must accept what the operator writes (a mismatch is a Candor bug)."""
    parse_config(config)
