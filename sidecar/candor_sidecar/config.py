"""The sidecar's YAML config: camelCase keys, the same schema the operator renders, validated strictly.

An unknown key or a bad value raises ConfigError naming the key (dotted path, e.g. `disk.maxPercent`)
and what is allowed; the CLI turns that into exit status 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from candor_sidecar.durations import DurationError, format_duration, parse_duration
from candor_sidecar.shown import show
from candor_sidecar.strict_yaml import YamlError, load_yaml_file
from candor_tracer.pod_contract import DEFAULT_AGENT_PORT, DEFAULT_HTTP_PORT, PODINFO_DIR, STATE_DIR

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad sidecar config; `field` is the dotted key, `problem` says what is allowed."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class ListenConfig:
    port: int
    address: str = "0.0.0.0"


@dataclass(frozen=True)
class DrainConfig:
    agent_interval: float = 2.0  # how often each HAProxy polls the agent (the policy's agentCheck.interval)
    max_wait: float = 6.0  # the longest /drain/wait holds an app's preStop hook


@dataclass(frozen=True)
class MemoryConfig:
    max_percent: float = 80.0


@dataclass(frozen=True)
class CpuConfig:
    warn_percent: float = 90.0  # the CPU check warns (never fails) from this load on


LOAD_FIGURES = ("cpu", "occupancy")


@dataclass(frozen=True)
class LoadWeightConfig:
    """The agent's weight follows the app's load (the policy's agentCheck.weight; absent: off)."""

    figures: tuple[str, ...] = LOAD_FIGURES  # `from`: which load figures may lower the weight
    target_percent: float = 70.0  # full weight up to this load
    min_percent: float = 10.0  # the load factor at saturation (100 % load): never 0
    step_percent: float = 10.0  # the load factor changes only by this many points or more (or to a bound)


@dataclass(frozen=True)
class DiskConfig:
    paths: tuple[str, ...] = ()
    max_percent: float = 90.0


@dataclass(frozen=True)
class DeadlockConfig:
    heartbeat_timeout: float = 30.0
    max_job_duration: float = 600.0


@dataclass(frozen=True)
class SidecarConfig:
    state_dir: str = STATE_DIR
    pod_info_dir: str | None = PODINFO_DIR
    http: ListenConfig = field(default_factory=lambda: ListenConfig(DEFAULT_HTTP_PORT))
    agent: ListenConfig = field(default_factory=lambda: ListenConfig(DEFAULT_AGENT_PORT))
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    cpu: CpuConfig = field(default_factory=CpuConfig)
    load_weight: LoadWeightConfig | None = None
    disk: DiskConfig = field(default_factory=DiskConfig)
    deadlock: DeadlockConfig = field(default_factory=DeadlockConfig)
    slow_start: float = 30.0
    max_conn: int | None = None
    evaluation_interval: float = 1.0
    final_scrape_timeout: float = 20.0
    drain: DrainConfig = field(default_factory=DrainConfig)
    # Per pod, so not in the file the policy writes: from the CLI (the injection passes the pod's value).
    grace_period: float = 30.0
    control_socket: str | None = None  # the unix socket `candor sidecar drain` talks to; None: no control socket
    # The ports the pod's Services send traffic to (per pod: the injection resolves named target ports against
    # the pod's containers): the `app:serving` check fails until each accepts a connection.
    app_ports: tuple[int, ...] = ()

    def with_overrides(self, *, state_dir: str | None = None, http_port: int | None = None,
                       agent_port: int | None = None, grace_period: float | None = None,
                       control_socket: str | None = None, app_ports: tuple[int, ...] | None = None) -> SidecarConfig:
        """The CLI flags win over the file."""
        result = self
        if app_ports is not None:
            checked = tuple(_port(port, "--app-port") for port in app_ports)
            result = replace(result, app_ports=tuple(dict.fromkeys(checked)))
        if state_dir is not None:
            result = replace(result, state_dir=state_dir)
        if grace_period is not None:
            if not 0 <= grace_period <= 86400 * 365:
                raise ConfigError("--termination-grace-period", f"expected seconds from 0 on, got {grace_period}")
            result = replace(result, grace_period=float(grace_period))
        if control_socket is not None:
            result = replace(result, control_socket=_path(control_socket, "--control-socket"))
        if http_port is not None:
            result = replace(result, http=replace(result.http, port=_port(http_port, "--http-port")))
        if agent_port is not None:
            result = replace(result, agent=replace(result.agent, port=_port(agent_port, "--agent-port")))
        if result.http.port == result.agent.port and result.http.address == result.agent.address:
            raise ConfigError("agent.port", f"must differ from http.port ({result.http.port})")
        return result


# --- value readers: each names the key and what is allowed -----------------------------------------

def _section(value: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key or "(top level)",
                          f"expected a mapping with keys {', '.join(allowed)}, got {show(value)}")
    for name in value:
        if name not in allowed:
            shown = str(name)[:60]
            raise ConfigError(f"{key}.{shown}" if key else shown,
                              f"unknown key; allowed here: {', '.join(allowed)}")
    return value


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(key, f"expected a TCP port, an integer from 1 to 65535, got {show(value)}")
    return value


def _percent(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= 100:
        raise ConfigError(key, f"expected a percentage, a number above 0 and at most 100, got {show(value)}")
    return float(value)


def _figures(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(item not in LOAD_FIGURES for item in value) \
            or len(set(value)) != len(value):
        raise ConfigError(key, f"expected a non-empty list of distinct load figures from {', '.join(LOAD_FIGURES)}, "
                               f"got {show(value)}")
    return tuple(value)


def _load_weight(value: object, key: str) -> LoadWeightConfig | None:
    if value is None:
        return None
    section = _section(value, key, ("from", "targetPercent", "minPercent", "stepPercent"))
    default = LoadWeightConfig()
    config = LoadWeightConfig(
        figures=_get(section, "from", f"{key}.from", _figures, default.figures),
        target_percent=_get(section, "targetPercent", f"{key}.targetPercent", _percent, default.target_percent),
        min_percent=_get(section, "minPercent", f"{key}.minPercent", _percent, default.min_percent),
        step_percent=_get(section, "stepPercent", f"{key}.stepPercent", _percent, default.step_percent))
    if config.target_percent >= 100:
        raise ConfigError(f"{key}.targetPercent", f"must be below 100 (the load at saturation), got "
                                                  f"{config.target_percent:g}")
    return config


def _path(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(key, f"expected an absolute path, got {show(value)}")
    return value


def _address(value: object, key: str) -> str:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise ConfigError(
            key, f"expected an IP address to listen on such as 0.0.0.0, 127.0.0.1 or ::, got {show(value)}"
        ) from None
    assert isinstance(value, str)
    return value


def _duration(minimum: float, maximum: float | None) -> Callable[[object, str], float]:
    def read(value: object, key: str) -> float:
        try:
            return parse_duration(value, key, minimum=minimum, maximum=maximum)
        except DurationError as error:
            raise ConfigError(error.field, error.problem) from None
    return read


def _max_conn(value: object, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigError(key, f"expected an integer from 1 to 1000000 (or null for no limit), got {show(value)}")
    return value


def _paths(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of absolute paths, got {show(value)}")
    return tuple(_path(item, f"{key}[{index}]") for index, item in enumerate(value))


def _get(section: Mapping[str, Any], name: str, key: str, read: Callable[[object, str], T], default: T) -> T:
    return read(section[name], key) if name in section else default


# --- the schema -----------------------------------------------------------------------------------

_TOP = ("stateDir", "podInfoDir", "http", "agent", "memory", "cpu", "loadWeight", "disk", "deadlock", "slowStart",
        "maxConn", "evaluationInterval", "finalScrapeTimeout", "drain")


def parse_config(mapping: object) -> SidecarConfig:
    """A validated SidecarConfig from the parsed YAML mapping (None or {} gives the defaults)."""
    top = _section(mapping, "", _TOP)
    defaults = SidecarConfig()

    def listen(name: str, default_port: int) -> ListenConfig:
        section = _section(top.get(name), name, ("port", "address"))
        return ListenConfig(port=_get(section, "port", f"{name}.port", _port, default_port),
                            address=_get(section, "address", f"{name}.address", _address, "0.0.0.0"))

    memory = _section(top.get("memory"), "memory", ("maxPercent",))
    cpu = _section(top.get("cpu"), "cpu", ("warnPercent",))
    disk = _section(top.get("disk"), "disk", ("paths", "maxPercent"))
    deadlock = _section(top.get("deadlock"), "deadlock", ("heartbeatTimeout", "maxJobDuration"))
    drain = _section(top.get("drain"), "drain", ("agentInterval", "maxWait"))
    pod_info: str | None = defaults.pod_info_dir
    if "podInfoDir" in top:
        pod_info = None if top["podInfoDir"] is None else _path(top["podInfoDir"], "podInfoDir")
    config = SidecarConfig(
        state_dir=_get(top, "stateDir", "stateDir", _path, defaults.state_dir),
        pod_info_dir=pod_info,
        http=listen("http", DEFAULT_HTTP_PORT),
        agent=listen("agent", DEFAULT_AGENT_PORT),
        memory=MemoryConfig(_get(memory, "maxPercent", "memory.maxPercent", _percent, 80.0)),
        cpu=CpuConfig(_get(cpu, "warnPercent", "cpu.warnPercent", _percent, 90.0)),
        load_weight=_load_weight(top.get("loadWeight"), "loadWeight"),
        disk=DiskConfig(paths=_get(disk, "paths", "disk.paths", _paths, ()),
                        max_percent=_get(disk, "maxPercent", "disk.maxPercent", _percent, 90.0)),
        deadlock=DeadlockConfig(
            heartbeat_timeout=_get(deadlock, "heartbeatTimeout", "deadlock.heartbeatTimeout",
                                   _duration(0.1, 86400.0), 30.0),
            max_job_duration=_get(deadlock, "maxJobDuration", "deadlock.maxJobDuration",
                                  _duration(0.1, 30 * 86400.0), 600.0)),
        slow_start=_get(top, "slowStart", "slowStart", _duration(0.0, 3600.0), 30.0),
        max_conn=_get(top, "maxConn", "maxConn", _max_conn, None),
        evaluation_interval=_get(top, "evaluationInterval", "evaluationInterval", _duration(0.1, 60.0), 1.0),
        final_scrape_timeout=_get(top, "finalScrapeTimeout", "finalScrapeTimeout", _duration(0.0, 3600.0), 20.0),
        drain=DrainConfig(
            agent_interval=_get(drain, "agentInterval", "drain.agentInterval", _duration(0.1, 3600.0), 2.0),
            max_wait=_get(drain, "maxWait", "drain.maxWait", _duration(0.0, 3600.0), 6.0)),
    )
    _check_cross_field(config)
    return config.with_overrides()


def _check_cross_field(config: SidecarConfig) -> None:
    """The HealthPolicy's rules that relate two fields, for the fields the sidecar config shares with it."""
    deadlock = config.deadlock
    if deadlock.max_job_duration < deadlock.heartbeat_timeout:
        raise ConfigError(
            "deadlock.maxJobDuration",
            f"must be at least deadlock.heartbeatTimeout ({format_duration(deadlock.heartbeat_timeout)}), "
            f"got {format_duration(deadlock.max_job_duration)}",
        )


def load_config(path: str | os.PathLike[str]) -> SidecarConfig:
    """Read and validate a YAML file; unreadable, oversized or non-YAML files are ConfigErrors too."""
    try:
        data = load_yaml_file(path)
    except YamlError as error:
        raise ConfigError(error.field, error.problem) from None
    return parse_config(data)
