"""The typed HealthPolicy: frozen values that `candor_operator.policy.parse_policy` returns, and its error.

Nothing here validates; a value of these types came out of parse_policy (or a test built it on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    controller: str = "haproxytech"
    services: tuple[str, ...] = ()  # empty: every Service whose selector matches the governed pods


@dataclass(frozen=True)
class HttpCheck:
    path: str = "/health"
    port: int = 9898
    interval: float = 2.0
    timeout: float | None = None
    rise: int = 2
    fall: int = 3
    expect_status: int = 200

    @property
    def effective_timeout(self) -> float:
        """HAProxy's `timeout check`: the policy's, else the interval (a check never outlives its period)."""
        return self.timeout if self.timeout is not None else self.interval


@dataclass(frozen=True)
class AgentCheck:
    port: int = 9999
    interval: float = 2.0


@dataclass(frozen=True)
class Memory:
    max_percent: int = 80


@dataclass(frozen=True)
class Disk:
    paths: tuple[str, ...] = ()
    max_percent: int = 90


@dataclass(frozen=True)
class Deadlock:
    heartbeat_timeout: float = 30.0
    max_job_duration: float = 600.0


@dataclass(frozen=True)
class Passive:
    observe: str
    error_limit: int = 10
    on_error: str = "fail-check"


@dataclass(frozen=True)
class Metrics:
    final_scrape_timeout: float = 20.0


@dataclass(frozen=True)
class Drain:
    """The drain before termination: app containers' preStop hooks wait until every HAProxy heard `drain`."""

    enabled: bool = True
    max_wait: float | None = None  # None: derived from the agent interval (effective_max_wait)

    def effective_max_wait(self, agent_interval: float) -> float:
        """The policy's maxWait, else three agent intervals and a second: every HAProxy polls within one
        interval, one that stayed silent for two intervals and a second is not waited for, and the
        sidecar's own preStop hook needs a moment to begin the drain."""
        return self.max_wait if self.max_wait is not None else 3 * agent_interval + 1.0


@dataclass(frozen=True)
class HealthPolicy:
    selector: Selector
    ingress: Ingress = Ingress()
    http_check: HttpCheck = HttpCheck()
    agent_check: AgentCheck = AgentCheck()
    memory: Memory = Memory()
    disk: Disk = Disk()
    deadlock: Deadlock = Deadlock()
    slow_start: float = 30.0
    max_conn: int | None = None
    queue_timeout: float | None = None
    passive: Passive | None = None
    metrics: Metrics = Metrics()
    rollout: str = "Automatic"
    drain: Drain = Drain()
