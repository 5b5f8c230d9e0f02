"""The HealthPolicy, declared once: the typed frozen values `candor_operator.policy.parse_policy`
returns, each field declared with its kind, bounds, default and description (candor_operator.policy_fields).

This module is the source of the spec's rules. parse_policy validates with it, and the CRD's
openAPIV3Schema is generated from it (`make crd`, candor_operator.crd). A new field is one line
here, in the CRD's camelCase spelled as snake_case, plus tests, `make crd`, and the README's
reference table. Nothing here validates; a value of these types came out of parse_policy (or a
test built it on purpose).
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


class PolicyError(ValueError):
    """An invalid HealthPolicy; `field` is the path the API server would name (`spec.slowStart`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


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
                             "Which HAProxy ingress controller's annotations to write.")
    services: tuple[str, ...] = text_list(
        SERVICE_NAME, 64,
        "Services to annotate; default every Service in the namespace whose selector matches the governed pods.")


@dataclass(frozen=True)
class HttpCheck:
    path: str = text("/health", HTTP_PATH)
    port: int = integer(DEFAULT_HTTP_PORT, 1, 65535)
    interval: float = duration("2s", "100ms", "1h")
    timeout: float | None = duration(None, "10ms", "1h", "HAProxy's `timeout check`; default the interval.")
    rise: int = integer(2, 1, 100)
    fall: int = integer(3, 1, 100)
    expect_status: int = integer(200, 100, 599)

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
    port: int = integer(DEFAULT_AGENT_PORT, 1, 65535)
    interval: float = duration("2s", "100ms", "1h")
    weight: LoadWeight | None = section(
        LoadWeight, "Weigh each pod by its load (off when absent): a starved or saturated pod gets less traffic.",
        optional=True)


@dataclass(frozen=True)
class Memory:
    max_percent: int = integer(80, 1, 100, "Fail when the app's working set exceeds this share of its memory limit.")


@dataclass(frozen=True)
class Cpu:
    warn_percent: int = integer(90, 1, 100, "The CPU check warns (never fails: busy is not sick) from this load of "
                                            "the app container's CPU.")


@dataclass(frozen=True)
class Disk:
    paths: tuple[str, ...] = text_list(DISK_PATH, 16, "Absolute paths (in the sidecar) whose filesystems are checked.")
    max_percent: int = integer(90, 1, 100)


@dataclass(frozen=True)
class Deadlock:
    heartbeat_timeout: float = duration("30s", "1s", "1h")
    max_job_duration: float = duration("10m", "1s", "168h")


@dataclass(frozen=True)
class Passive:
    observe: str = choice(None, ("layer4", "layer7"))
    error_limit: int = integer(10, 1, 1000)
    on_error: str = choice("fail-check", ("fastinter", "fail-check", "sudden-death", "mark-down"))


@dataclass(frozen=True)
class Metrics:
    final_scrape_timeout: float = duration(
        "20s", "1s", "10m",
        "After SIGTERM the sidecar serves /metrics until one scrape after its final fold, or this long.")


@dataclass(frozen=True)
class Drain:
    """The drain before termination: app containers' preStop hooks wait until every HAProxy heard `drain`."""

    enabled: bool = boolean(
        True, "Inject the preStop hooks (the sidecar still drains on its own SIGTERM without them).")
    max_wait: float | None = duration(
        None, "1s", "10m",
        "The longest an app container's preStop hook waits; default three agentCheck intervals and a second. "
        "Added to the pod's terminationGracePeriodSeconds, so the app keeps its own time.")

    def effective_max_wait(self, agent_interval: float) -> float:
        """The policy's maxWait, else three agent intervals and a second: every HAProxy polls within one
        interval, one that stayed silent for two intervals and a second is not waited for, and the
        sidecar's own preStop hook needs a moment to begin the drain."""
        return self.max_wait if self.max_wait is not None else 3 * agent_interval + 1.0


@dataclass(frozen=True)
class HealthPolicy:
    """How HAProxy and the Candor sidecar judge the health of the pods a selector governs."""

    selector: Selector = label_selector(
        "The pods this policy governs (a label selector in the policy's namespace); must not be empty.")
    ingress: Ingress = section(Ingress)
    http_check: HttpCheck = section(HttpCheck, "HAProxy's active HTTP check against the sidecar's /health.")
    agent_check: AgentCheck = section(
        AgentCheck, "HAProxy's agent-check against the sidecar's agent port (weight, drain, maint, down).")
    memory: Memory = section(Memory)
    cpu: Cpu = section(Cpu)
    disk: Disk = section(Disk)
    deadlock: Deadlock = section(Deadlock)
    slow_start: float = duration(
        "30s", "0s", "1h",
        "Weight ramps from 0 to 100% over this long after a recovery and for new pods; 0s disables.")
    max_conn: int | None = integer(
        None, 1, 100_000,
        "Per-pod concurrent connection limit in HAProxy; excess requests wait in HAProxy's queue.")
    queue_timeout: float | None = duration(
        None, "10ms", "5m", "How long a request may wait in HAProxy's queue before a 503 (needs maxConn).")
    passive: Passive | None = section(
        Passive, "HAProxy's passive checks on live traffic (observe, error-limit, on-error).", optional=True)
    metrics: Metrics = section(Metrics)
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
