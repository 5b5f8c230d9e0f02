"""The HealthPolicy, declared once: the typed frozen values `candor_operator.policy.parse_policy`
returns, each field declared with its kind, bounds, default and description (candor_operator.policy_fields).

This module is the source of the spec's rules. parse_policy validates with it, and the CRD's
openAPIV3Schema is generated from it (`make crd`, candor_operator.crd). A new field is one line
here, in the CRD's camelCase spelled as snake_case, plus tests and `make crd` (which also writes the
reference page, docs/reference/healthpolicy.md, from these descriptions). Nothing here validates;
a value of these types came out of parse_policy (or a test built it on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from candor_operator.policy_fields import (
    Compare,
    Needs,
    Rule,
    Text,
    boolean,
    choice,
    choice_list,
    duration,
    integer,
    label_selector,
    section,
    text,
    text_list,
)
from candor_tracer.pod_contract import DEFAULT_AGENT_PORT, DEFAULT_HTTP_PORT

# No spaces, quotes, `#` or `$`: the path lands verbatim in an HAProxy `option httpchk` line.
HTTP_PATH = Text(r"^/[A-Za-z0-9._~!&()*+,;=:@%/?-]*$", 1024,
                 "an absolute URL path without spaces, quotes, '#' or '$' (e.g. /health)")
SERVICE_NAME = Text(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", 63, "a Service name (DNS-1035 label: a-z, 0-9, '-', at most 63)")
DISK_PATH = Text(r"^/[^\s]*$", 1024, "an absolute path without whitespace")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelRequirement, ...] = ()

    def as_label_selector(self) -> dict[str, Any]:
        """The Kubernetes LabelSelector form (for API calls and candor_operator.labels)."""
        result: dict[str, Any] = {}
        if self.match_labels:
            result["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            result["matchExpressions"] = [
                {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
                for r in self.match_expressions
            ]
        return result


@dataclass(frozen=True)
class Ingress:
    controller: str = choice("haproxytech", ("haproxytech", "haproxy-ingress"),
                             "Which HAProxy ingress controller's annotations to write: haproxytech "
                             "(`haproxy.org/…`) or haproxy-ingress (`haproxy-ingress.github.io/…`).")
    services: tuple[str, ...] = text_list(
        SERVICE_NAME, 64,
        "Services to annotate; default every Service in the namespace whose selector matches the governed pods.")


@dataclass(frozen=True)
class HttpCheck:
    path: str = text("/health", HTTP_PATH, "HAProxy's active check (`option httpchk GET <path>`) against the sidecar.")
    port: int = integer(DEFAULT_HTTP_PORT, 1, 65535, "The sidecar's HTTP port (checks go there, not to the app).")
    interval: float = duration("2s", "100ms", "1h", "HAProxy's `inter`: the time between checks.")
    timeout: float | None = duration(None, "10ms", "1h", "HAProxy's `timeout check`; default the interval.")
    rise: int = integer(2, 1, 100, "Successful checks before a server is UP.")
    fall: int = integer(3, 1, 100, "Failed checks before a server is DOWN.")
    expect_status: int = integer(200, 100, 599, "`http-check expect status`. The sidecar answers 200 for pass and "
                                                "warn, 503 for fail.")

    @property
    def effective_timeout(self) -> float:
        """HAProxy's `timeout check`: the policy's, else the interval (a check never outlives its period)."""
        return self.timeout if self.timeout is not None else self.interval


@dataclass(frozen=True)
class LoadWeight:
    """The agent's weight follows the app's load: the ramp's weight times a load factor, full up to the target
    load, falling linearly to minPercent at saturation; smoothed, and changed only by stepPercent points."""

    # `from` in the spec (a Python keyword, hence the trailing underscore; json_name drops it).
    from_: tuple[str, ...] = choice_list(
        ("cpu", "occupancy"), ("cpu", "occupancy"),
        "The load figures that may lower the weight: cpu (the app container's CPU utilisation of its limit, "
        "throttling, pressure) and occupancy (in-flight traces of the declared workers); the highest decides.")
    target_percent: int = integer(70, 1, 99, "Full weight up to this load.")
    min_percent: int = integer(10, 1, 100, "The weight's share left at saturation (100% load); never 0.")
    step_percent: int = integer(10, 1, 50, "The load factor moves only by this many points (or to full or "
                                           "minPercent), so HAProxy is not told a new weight at every poll.")


@dataclass(frozen=True)
class AgentCheck:
    port: int = integer(DEFAULT_AGENT_PORT, 1, 65535,
                        "The sidecar's agent port (`agent-check agent-port`); HAProxy gets `weight 100` so the "
                        "agent's percentages work.")
    interval: float = duration("2s", "100ms", "1h", "HAProxy's `agent-inter`: the time between agent polls.")
    weight: LoadWeight | None = section(
        LoadWeight, "Weigh each pod by its load (off when absent): a starved or saturated pod gets less traffic.",
        optional=True)


@dataclass(frozen=True)
class Memory:
    max_percent: int = integer(80, 1, 100, "Fail when the app's working set exceeds this share of its memory limit.")


@dataclass(frozen=True)
class Cpu:
    warn_percent: int = integer(90, 1, 100, "The `cpu:utilization` check warns (never fails: busy is not "
                                            "sick) when the app container's CPU load (10 s average) reaches this.")


@dataclass(frozen=True)
class Disk:
    paths: tuple[str, ...] = text_list(DISK_PATH, 16, "Absolute paths (in the sidecar) whose filesystems are checked.")
    max_percent: int = integer(90, 1, 100, "Fail when a path's filesystem is fuller than this.")


@dataclass(frozen=True)
class Deadlock:
    heartbeat_timeout: float = duration("30s", "1s", "1h",
                                        "Fail when the app's tracer has not heartbeated for this long.")
    max_job_duration: float = duration("10m", "1s", "168h", "Fail when one traced job has run longer than this.")


@dataclass(frozen=True)
class Passive:
    observe: str = choice(None, ("layer4", "layer7"), "Watch live traffic for errors (HAProxy's `observe`).")
    error_limit: int = integer(10, 1, 1000, "Consecutive errors before onError (`error-limit`).")
    on_error: str = choice("fail-check", ("fastinter", "fail-check", "sudden-death", "mark-down"),
                           "What HAProxy does at the limit (`on-error`).")


@dataclass(frozen=True)
class Metrics:
    final_scrape_timeout: float = duration(
        "20s", "1s", "10m",
        "After SIGTERM the sidecar serves /metrics until one scrape after its final fold, or this long; a "
        "sidecar never scraped exits right after the fold.")


@dataclass(frozen=True)
class Drain:
    """The drain before termination: app containers' preStop hooks wait until every HAProxy heard `drain`."""

    enabled: bool = boolean(
        True, "Inject the preStop hooks. false: none, and the agent says drain only once the app has exited (the "
              "sidecar still drains on its own SIGTERM).")
    max_wait: float | None = duration(
        None, "1s", "10m",
        "The longest an app container's preStop hook waits; default three agentCheck intervals and a second. "
        "Added to the pod's terminationGracePeriodSeconds, so the app keeps its own time.")

    def effective_max_wait(self, agent_interval: float) -> float:
        """The policy's maxWait, else three agent intervals and a second: every HAProxy polls within one
        interval, one that stayed silent for an interval and a second is not waited for, and the
        sidecar's own preStop hook needs a moment to begin the drain; the rest is room for a slow HAProxy."""
        return self.max_wait if self.max_wait is not None else 3 * agent_interval + 1.0


@dataclass(frozen=True)
class HealthPolicy:
    """How HAProxy and the Candor sidecar judge the health of the pods a selector governs."""

    selector: Selector = label_selector(
        "The pods this policy governs (a label selector in the policy's namespace); must not be empty.")
    ingress: Ingress = section(Ingress, "Which ingress controller's annotations to write, and on which Services.")
    http_check: HttpCheck = section(HttpCheck, "HAProxy's active HTTP check against the sidecar's /health.")
    agent_check: AgentCheck = section(
        AgentCheck, "HAProxy's agent-check against the sidecar's agent port (weight, drain, maint, down).")
    memory: Memory = section(Memory, "The memory check (`memory:utilization`): fails the pod's health.")
    cpu: Cpu = section(Cpu, "The CPU check (`cpu:utilization`): warns only.")
    disk: Disk = section(Disk, "The disk check (`disk:utilization`): off while no path is given.")
    deadlock: Deadlock = section(Deadlock, "The deadlock check (`deadlock:heartbeat`): a silent or stuck app fails.")
    slow_start: float = duration(
        "30s", "0s", "1h",
        "The agent ramps the weight from 0 to 100% over this long after a recovery and for new pods (HAProxy's own "
        "`slowstart` is not used); 0s disables.")
    max_conn: int | None = integer(
        None, 1, 100_000,
        "Per-pod concurrent connection limit in HAProxy (`pod-maxconn` / `maxconn-server`, and `maxconn:N` from the "
        "agent); default none (unlimited). Excess requests wait in HAProxy's queue. haproxytech divides it among its "
        "controller's pods; haproxy-ingress does not, so a pod can get maxConn × replicas.")
    queue_timeout: float | None = duration(
        None, "10ms", "5m",
        "`timeout queue`: how long a request may wait in HAProxy's queue for a slot before a 503 (needs maxConn); "
        "default HAProxy's own.")
    passive: Passive | None = section(
        Passive, "HAProxy's passive checks on live traffic (observe, error-limit, on-error); omit it to turn passive "
                 "checks off.", optional=True)
    metrics: Metrics = section(Metrics, "The sidecar's /metrics at termination.")
    rollout: str = choice(
        "Automatic", ("Automatic", "Manual"),
        "Automatic restarts governed Deployments so the sidecar arrives; Manual leaves that to you.")
    drain: Drain = section(
        Drain,
        "Drain before termination: the injected preStop hooks make the agent answer drain and hold each app "
        "container's SIGTERM until every HAProxy polling the agent has heard it.")

    # The rules relating two fields (dotted spec paths); the CRD states each as a CEL rule on the
    # innermost object holding both, parse_policy checks them after the fields.
    RULES: ClassVar[tuple[Rule, ...]] = (
        Compare("slowStart", ">=", "httpCheck.interval", zero_means="no ramp"),
        Compare("slowStart", ">=", "agentCheck.interval", zero_means="no ramp"),
        Needs("queueTimeout", "maxConn", "HAProxy only queues requests once a server is at maxConn"),
        Compare("agentCheck.port", "!=", "httpCheck.port",
                why="the sidecar serves HTTP and the agent on separate ports"),
        Compare("drain.maxWait", ">=", "agentCheck.interval",
                why="a shorter wait could end before any HAProxy polled again"),
        Compare("httpCheck.timeout", "<=", "httpCheck.interval"),
        Compare("deadlock.maxJobDuration", ">=", "deadlock.heartbeatTimeout"),
    )
