"""The sidecar's YAML config, declared once: camelCase keys, the same schema the operator renders.

Each key is declared below with its kind (values, unit, bounds), default and description, in the vocabulary
of candor_sidecar.config_fields. parse_config reads a file with that declaration, and
candor_sidecar.config_reference renders docs/reference/sidecar-config.md from it (`make reference`). A new
key is one line here, plus tests and `make reference`.

An unknown key or a bad value raises FieldError naming the key (dotted path, e.g. `disk.maxPercent`)
and what is allowed; the CLI turns that into exit status 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import ClassVar

from candor_sidecar.config_fields import (
    AbsolutePath,
    Address,
    AtLeast,
    Below,
    ChoiceList,
    Duration,
    Limit,
    PathList,
    Percent,
    Port,
    PortList,
    Rule,
    Seconds,
    flag,
    key,
    read_flag,
    read_section,
    required_key,
    section,
)
from candor_sidecar.field_error import FieldError
from candor_sidecar.strict_yaml import load_yaml_file
from candor_tracer.pod_contract import (
    DEFAULT_AGENT_PORT,
    DEFAULT_HTTP_PORT,
    PODINFO_DIR,
    STATE_DIR,
    TERMINATION_MESSAGE_PATH,
)


@dataclass(frozen=True)
class ListenConfig:
    port: int = required_key(Port(), "The TCP port to listen on.")  # its default: the section's
    address: str = key(Address(), "0.0.0.0", "The address to listen on: every interface by default.")


@dataclass(frozen=True)
class DrainConfig:
    agent_interval: float = key(
        Duration(0.1, 3600.0), 2.0,
        "How often each HAProxy polls the agent: HAProxy's `agent-inter`, the policy's `agentCheck.interval`. "
        "During a drain a load balancer that has not polled for one of these and a second has stopped polling "
        "(HAProxy polls on a fixed timer; it is not waited for), so an app container's wait normally ends "
        "within one interval and at most this + 1 s after the last poll of one that stopped. Load weights "
        "smooth each load figure with half of it as time constant.")
    max_wait: float = key(
        Duration(0.0, 3600.0), 6.0,
        "The longest `GET /drain/wait` holds an app container's preStop hook (it then answers `timeout`); "
        "a wait never leaves the app less than 2 s of its termination grace period either. The policy's "
        "`drain.maxWait`, by default three agent intervals and a second.")


@dataclass(frozen=True)
class MemoryConfig:
    max_percent: float = key(
        Percent(), 80.0,
        "The `memory:utilization` check fails when the app container's working set reaches this share of "
        "its memory limit. The app's tracer writes the figures with each heartbeat (the sidecar cannot read "
        "another container's cgroup), every `CANDOR_HEARTBEAT_INTERVAL` (0.5 s).")


@dataclass(frozen=True)
class CpuConfig:
    warn_percent: float = key(
        Percent(), 90.0,
        "The `cpu:utilization` check warns (never fails: busy is not sick) from this load of the app "
        "container's CPU on.")


LOAD_FIGURES = ("cpu", "occupancy")


@dataclass(frozen=True)
class LoadWeightConfig:
    """The agent's weight follows the app's load (the policy's agentCheck.weight; absent: off)."""

    figures: tuple[str, ...] = key(
        ChoiceList(LOAD_FIGURES, "load figures"), LOAD_FIGURES,
        "Which load figures may lower the weight; the highest decides. `cpu`: the app container's CPU "
        "utilisation (of its quota, or of the CPUs without one), throttling (share of periods that hit the "
        "quota) and pressure (PSI `some avg10`, cgroup v2 only). `occupancy`: busy workers ÷ the workers the "
        "app declared, averaged between two evaluations. A figure that could not be measured changes nothing.",
        name="from")
    target_percent: float = key(Percent(), 70.0, "Full weight up to this load.")
    min_percent: float = key(
        Percent(), 10.0,
        "The load factor at saturation (100 % load): the weight falls linearly from `targetPercent` to this, "
        "never to 0 (taking a pod out is `down`'s and `drain`'s job). A load beyond saturation says "
        "`saturated`.")
    step_percent: float = key(
        Percent(), 10.0,
        "The load factor moves only by this many points or more (or onto a bound), so at steady load HAProxy "
        "keeps its weight.")

    RULES: ClassVar[tuple[Rule, ...]] = (Below("targetPercent", 100, "the load at saturation"),)


@dataclass(frozen=True)
class DiskConfig:
    paths: tuple[str, ...] = key(
        PathList(), (), "Absolute paths (in the sidecar container) whose filesystems the `disk:utilization` "
                        "check watches; none by default.")
    max_percent: float = key(Percent(), 90.0, "The disk check fails when a filesystem's use reaches this share.")


@dataclass(frozen=True)
class DeadlockConfig:
    heartbeat_timeout: float = key(
        Duration(0.1, 86400.0), 30.0,
        "`deadlock:heartbeat` fails for an app process whose last heartbeat is older than this; an event loop "
        "stall counts (`deadlock:eventLoop`) for this long after it ended, and an app whose last process "
        "exited fails the check for this long.")
    max_job_duration: float = key(
        Duration(0.1, 30 * 86400.0), 600.0,
        "`deadlock:jobDuration` fails for an app process whose oldest trace in flight is older than this. The "
        "HealthPolicy's rule relating it to `heartbeatTimeout` holds here too.")

    # The HealthPolicy's rule holds here too.
    RULES: ClassVar[tuple[Rule, ...]] = (AtLeast("maxJobDuration", "heartbeatTimeout"),)


@dataclass(frozen=True)
class SidecarConfig:
    state_dir: str = key(
        AbsolutePath(), STATE_DIR,
        "The tracer's journals: the state volume (an emptyDir) mounted in every container of the pod; "
        "created at start if missing. Every process of the pod can write it, so the sidecar trusts nothing "
        "in it. Without a control socket, the sidecar also keeps its admin word (`agent-admin-word`) here. "
        "`--state-dir` overrides it.")
    pod_info_dir: str | None = key(
        AbsolutePath(nullable=True), PODINFO_DIR,
        "The downwardAPI volume holding the pod's labels and annotations, read live at each evaluation: the "
        "annotation `candor.io/maintenance: \"true\"` makes the agent answer `maint`, and removing it answers "
        "`ready` for 30 s. null: no pod information (no maintenance annotation).")
    http: ListenConfig = section(
        ListenConfig,
        "The HTTP port: `/health`, `/health/<check>`, `/livez`, `/readyz`, `/metrics` and `/drain/wait`. Its "
        "connection budget is its own (512, fewer under a low open-file limit). `--http-port` overrides "
        "`http.port`.",
        ListenConfig(DEFAULT_HTTP_PORT))
    agent: ListenConfig = section(
        ListenConfig,
        "The HAProxy agent-check port: one line per connection, e.g. `up 40% maxconn:30`, `drain`, `maint`, "
        "`down # memory 91% > 80%`. Its connection budget is its own, so nothing sent to the HTTP port takes "
        "its capacity. `--agent-port` overrides `agent.port`, which must differ from `http.port` when both "
        "listen on one address.",
        ListenConfig(DEFAULT_AGENT_PORT))
    memory: MemoryConfig = section(MemoryConfig, "The app container's memory check.")
    cpu: CpuConfig = section(CpuConfig, "The app container's CPU check.")
    load_weight: LoadWeightConfig | None = section(
        LoadWeightConfig,
        "Load weights (the policy's `agentCheck.weight`; absent: off): the agent answers the ramp's weight "
        "times a load factor, 100 % up to `targetPercent` of load, falling linearly to `minPercent` at "
        "saturation, e.g. `up 52% # cpu 86% > 70%`. The factor is taken from the load the pod would carry at "
        "full weight (its measured load divided by the factor in force), so a lowered pod stays where its load "
        "puts it. Each figure is smoothed (time constant: half of `drain.agentInterval`, so a change is 95 % "
        "felt after 1.5 polls).",
        optional=True)
    disk: DiskConfig = section(DiskConfig, "Filesystem checks.")
    deadlock: DeadlockConfig = section(DeadlockConfig, "The app processes' heartbeats and long jobs.")
    slow_start: float = key(
        Duration(0.0, 3600.0), 30.0,
        "The agent's weight ramps linearly from 0 to 100 % over this long after a recovery and after the "
        "sidecar starts. It is the only ramp: Candor renders no HAProxy `slowstart`, which would scale the "
        "agent's weight a second time after a DOWN→UP (the agent says 40 %, HAProxy balances with 40 % of "
        "that), cut the pod's `maxconn` by the same fraction, and skip new servers anyway. 0s: no ramp.")
    max_conn: int | None = key(
        Limit(1_000_000), None,
        "The pod's concurrent connection limit, said to HAProxy in each agent answer (`maxconn:30`); "
        "null: no limit.")
    evaluation_interval: float = key(
        Duration(0.1, 60.0), 1.0,
        "The checks run this often in the background, never on the request path: the journals are read on a "
        "worker thread and `/health` and the agent answer from the latest evaluation. The operator renders "
        "half the agent interval, at most 1 s. `/livez` fails when no evaluation ended for 3 × this (at "
        "least 5 s). How soon a fault reaches HAProxy is the sum of three periods: the app's heartbeat "
        "(`CANDOR_HEARTBEAT_INTERVAL`, 0.5 s), this, and HAProxy's agent interval; with a 1 s agent interval "
        "that is 2 s at worst and about half of it typically.")
    final_scrape_timeout: float = key(
        Duration(0.0, 3600.0), 20.0,
        "On SIGTERM the agent answers `drain`, every journal is folded, and, if `/metrics` has been scraped "
        "at least once, it is served until one scrape after the fold, or this long. Never scraped, the sidecar "
        "exits right after the fold (nothing is coming for a final scrape): a pod that leaves before its first "
        "scrape takes its journals' seconds with it. A second SIGTERM exits at once.")
    drain: DrainConfig = section(DrainConfig, "The drain before termination.")
    # Per pod, so not in the file the policy writes: the injection passes them on the command line.
    grace_period: float = flag(
        "--termination-grace-period", Seconds(86400 * 365), 30.0,
        "The pod's `terminationGracePeriodSeconds`. It bounds the drain wait (which leaves the app at least "
        "2 s of it) and the drain's self-lift: a drain that no termination follows (a hand-run "
        "`candor sidecar drain`) lifts itself after the grace period plus a quarter of it (at least 5 s).")
    control_socket: str | None = flag(
        "--control-socket", AbsolutePath(), None,
        "The unix socket `candor sidecar drain` talks to (also `$CANDOR_CONTROL_SOCKET`), in a directory "
        "only the sidecar container mounts; its directory also keeps the admin word. None: a drain starts "
        "with SIGTERM only.")
    app_ports: tuple[int, ...] = flag(
        "--app-port", PortList(), (),
        "The ports the pod's Services send traffic to (repeatable; the injection resolves named target ports "
        "against the pod's containers): the `app:serving` check (`GET /health/app`, the injected "
        "readinessProbe's path) fails until each accepts a TCP connection.")
    termination_message_path: str | None = flag(
        "--termination-message-path", AbsolutePath(nullable=True), TERMINATION_MESSAGE_PATH,
        "The container's termination message file (its `terminationMessagePath`; the kubelet's default, which "
        "the injection states). When a drain ends (or at exit, one still under way) the sidecar writes its "
        "summary there as one line of JSON, e.g. `{\"drain\":{\"seconds\":2.13,\"outcome\":\"removed\",...}}`; "
        "the kubelet copies it into the pod's status and the operator posts it as the pod's `Drained` Event. "
        "Written only into a file that exists (the kubelet creates it), so nothing is created outside "
        "Kubernetes; a file that cannot be written is logged once at debug level. An empty value: none.")

    def with_overrides(self, *, state_dir: str | None = None, http_port: int | None = None,
                       agent_port: int | None = None, grace_period: float | None = None,
                       control_socket: str | None = None, app_ports: tuple[int, ...] | None = None,
                       termination_message_path: str | None = None) -> SidecarConfig:
        """The CLI flags win over the file (`termination_message_path` "": none)."""
        result = self
        if termination_message_path is not None:
            result = replace(result, termination_message_path=read_flag(
                SidecarConfig, "termination_message_path", termination_message_path or None))
        if app_ports is not None:
            result = replace(result, app_ports=read_flag(SidecarConfig, "app_ports", app_ports))
        if state_dir is not None:
            result = replace(result, state_dir=state_dir)
        if grace_period is not None:
            result = replace(result, grace_period=read_flag(SidecarConfig, "grace_period", grace_period))
        if control_socket is not None:
            result = replace(result, control_socket=read_flag(SidecarConfig, "control_socket", control_socket))
        if http_port is not None:
            result = replace(result, http=replace(result.http, port=Port().read(http_port, "--http-port")))
        if agent_port is not None:
            result = replace(result, agent=replace(result.agent, port=Port().read(agent_port, "--agent-port")))
        if result.http.port == result.agent.port and result.http.address == result.agent.address:
            raise FieldError("agent.port", f"must differ from http.port ({result.http.port})")
        return result


def parse_config(mapping: object) -> SidecarConfig:
    """A validated SidecarConfig from the parsed YAML mapping (None or {} gives the defaults)."""
    return read_section(SidecarConfig, mapping, "", SidecarConfig()).with_overrides()


def load_config(path: str | os.PathLike[str]) -> SidecarConfig:
    """Read and validate a YAML file; unreadable, oversized or non-YAML files are FieldErrors too."""
    return parse_config(load_yaml_file(path))
