"""The run: start every real process, play the scripted faults, record what happened and when.

Everything the analysis needs is in `RunRecord`: monotonic times of each fault (the clock of the truth files
and the tracer journals), the wall-minus-monotonic offset to line them up with Prometheus' timestamps, and the
sub-second HAProxy and agent samples.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from candor_demo.cpu_cgroup import CgroupUnavailable, CpuGroups, sweep_stale
from candor_demo.haproxy_process import HAPROXY_BINARY, HAProxyProcess
from candor_demo.instances import Instance
from candor_demo.loadgen import LoadGenerator, RequestResult
from candor_demo.policy import BACKEND, ServerPorts, haproxy_config, sidecar_config
from candor_demo.ports import listen_port
from candor_demo.progress import Progress, colour_status
from candor_demo.prometheus_process import PROMETHEUS_BINARY, PrometheusProcess
from candor_demo.samplers import AgentRecorder, AgentSample, CpuRecorder, CpuSample, HAProxyRecorder, ServerSample
from candor_demo.settings import INSTANCES, MEMORY_FILL_PERCENT, MEMORY_MAX_PERCENT, DemoSettings
from candor_sidecar.durations import parse_duration


class ScenarioError(RuntimeError):
    """A step of the script could not be played (a process died, a fault never took effect)."""


@dataclass
class KillRecord:
    instance: str
    slot: int
    pid: int
    at: float  # monotonic, just before the signal
    job_started: float  # monotonic start of the job it was running


@dataclass
class TermRecord:
    instance: str
    app_term_at: float
    app_exit_at: float | None
    sidecar_term_at: float | None = None
    sidecar_exit_at: float | None = None
    sidecar_status: int | None = None
    deleted_at: float | None = None  # monotonic: the preStop hooks started (the pod's deletion)
    drain_outcome: str = ""  # the app's hook: heard, timeout, no-drain, failed
    haproxy_status_at_term: str = ""  # HAProxy's view of the server when the app got SIGTERM


@dataclass
class StarveRecord:
    instance: str
    start: float  # monotonic: the low CPU limit written and the hog started
    end: float  # monotonic: the hog stopped and the limit lifted
    cores: float  # the CPU limit while starved


@dataclass
class RunRecord:
    settings: DemoSettings
    wall_minus_mono: float
    started: float  # monotonic: the script's zero, once Prometheus scrapes every target (fault times count from here)
    launched: float  # monotonic: the first process started
    ended: float = 0.0
    instance_names: tuple[str, ...] = INSTANCES
    truth_files: dict[str, Path] = field(default_factory=dict)
    ports: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> app/metrics/sidecar/agent
    events: list[tuple[float, str]] = field(default_factory=list)
    memory_crossed_at: float | None = None
    memory_freed_at: float | None = None
    memory_rss_peak: int | None = None
    kill: KillRecord | None = None
    term: TermRecord | None = None
    haproxy_samples: list[ServerSample] = field(default_factory=list)
    agent_samples: list[AgentSample] = field(default_factory=list)
    requests: list[RequestResult] = field(default_factory=list)
    haproxy_log: str = ""
    haproxy_config: str = ""
    load_weights: bool = False  # each app ran in its own CPU cgroup and the policy weighed them by CPU
    starve: StarveRecord | None = None
    starve_note: str = ""  # why the starvation phase was skipped
    cpu_samples: list[CpuSample] = field(default_factory=list)

    def wall(self, monotonic: float) -> float:
        return monotonic + self.wall_minus_mono

    def mono(self, wall: float) -> float:
        return wall - self.wall_minus_mono


def clock_offset() -> float:
    """time.time() − time.monotonic(), the smallest of a few reads (least disturbed by preemption)."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) / 2)
    assert best is not None
    return best[1]


class Demo:
    """Owns the processes of one run; use `run()` inside the `with`, then `prometheus` for the analysis."""

    def __init__(self, settings: DemoSettings, workdir: Path, progress: Progress,
                 tools: dict[str, str] | None = None) -> None:
        self.settings, self.workdir, self.progress = settings, workdir, progress
        self.tools = tools or {}
        self.instances = [Instance(name, index, workdir / name, settings.job_max[index],
                                   "process" if index == 2 else "thread") for index, name in enumerate(INSTANCES)]
        now = time.monotonic()
        self.record = RunRecord(settings, clock_offset(), now, now)
        self.stack = ExitStack()
        self.haproxy: HAProxyProcess | None = None
        self.prometheus: PrometheusProcess | None = None
        self.haproxy_recorder: HAProxyRecorder | None = None
        self.agent_recorder: AgentRecorder | None = None
        self.cpu_recorder: CpuRecorder | None = None
        self.load: LoadGenerator | None = None
        self.cpu_groups: CpuGroups | None = None
        self.hog: subprocess.Popen[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> Demo:
        self.stack.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_samplers()
        self.stop_hog()
        for instance in self.instances:
            instance.stop_all()
        self.stack.__exit__(None, None, None)
        if self.cpu_groups is not None:  # once every process in them has exited
            try:
                self.cpu_groups.remove()
            except OSError as error:
                self.progress.message(f"could not remove the demo's CPU cgroups: {error}")

    def event(self, text: str) -> None:
        self.record.events.append((time.monotonic(), text))
        self.progress.event(text)

    def at(self, offset: float) -> float:
        return self.record.started + offset

    def wait_until(self, offset: float, poll: Callable[[], None] | None = None) -> None:
        deadline = self.at(offset)
        while (left := deadline - time.monotonic()) > 0:
            for instance in self.instances:
                if instance.name != (self.record.term.instance if self.record.term else None):
                    instance.raise_if_dead()
            if poll is not None:
                poll()
            time.sleep(min(left, 0.1))

    # -- start-up -----------------------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        frontend, stats = listen_port(), listen_port()
        # Prometheus first: it takes a few seconds to pick up its targets, time the apps need to start anyway.
        self.progress.set_phase("starting Prometheus")
        jobs = {"candor": [f"127.0.0.1:{i.sidecar_port}" for i in self.instances],
                "naive": [f"127.0.0.1:{i.metrics_port}" for i in self.instances],
                "haproxy": [f"127.0.0.1:{stats}"]}
        (self.workdir / "prometheus").mkdir(parents=True, exist_ok=True)
        self.prometheus = self.stack.enter_context(
            PrometheusProcess(jobs, scrape_interval=settings.scrape_interval, workdir=self.workdir / "prometheus",
                              port=listen_port(), binary=self.tools.get("prometheus", PROMETHEUS_BINARY)))
        self.event(f"Prometheus :{self.prometheus.port} will scrape sidecars, naive counters and HAProxy every "
                   f"{settings.scrape_interval:g} s")

        self.make_cpu_groups()
        self.progress.set_phase("starting sidecars and app instances")
        for instance in self.instances:
            instance.workdir.mkdir(parents=True, exist_ok=True)
            instance.start_sidecar(sidecar_config(settings, str(instance.state_dir), instance.sidecar_port,
                                                  instance.agent_port, self.record.load_weights))
        for instance in self.instances:
            instance.start_app(settings)
        for instance in self.instances:
            instance.wait_ready(60.0)
            self.record.truth_files[instance.name] = instance.truth_file
            self.record.ports[instance.name] = {"app": instance.app_port, "metrics": instance.metrics_port,
                                                "sidecar": instance.sidecar_port, "agent": instance.agent_port}
            self.event(f"{instance.name} up: 10 {instance.worker_model} workers, jobs up to "
                       f"{instance.job_max:g} s, sidecar :{instance.sidecar_port}, agent :{instance.agent_port}")

        self.progress.set_phase("starting HAProxy")
        servers = [ServerPorts(i.name, i.app_port, i.sidecar_port, i.agent_port) for i in self.instances]
        config = haproxy_config(settings, servers, frontend, stats)
        (self.workdir / "haproxy.cfg").write_text(config)
        self.record.haproxy_config = config
        (self.workdir / "haproxy").mkdir(exist_ok=True)
        self.haproxy = self.stack.enter_context(HAProxyProcess(
            config, workdir=self.workdir / "haproxy", binary=self.tools.get("haproxy", HAPROXY_BINARY)))
        self.event(f"HAProxy :{frontend} -> {len(servers)} servers (config rendered from the HealthPolicy)")

        self.haproxy_recorder = HAProxyRecorder(self.haproxy, BACKEND)
        self.haproxy_recorder.poller.start()
        self.agent_recorder = AgentRecorder({i.name: i.agent_port for i in self.instances})
        self.agent_recorder.poller.start()
        if self.cpu_groups is not None:
            self.cpu_recorder = CpuRecorder(self.cpu_groups.groups)
            self.cpu_recorder.poller.start()
        self.load = LoadGenerator(frontend, settings.request_rate)
        self.load.start()
        self.event(f"load generator: {settings.request_rate:g} requests/s through HAProxy")
        self.progress.set_phase("waiting for Prometheus' first scrape of every target")
        self.prometheus.wait_for_targets_up(timeout=30.0 + 2 * settings.scrape_interval)
        self.record.started = time.monotonic()
        self.event("Prometheus scrapes every target: the script's clock starts (0 s)")

    def stop_samplers(self) -> None:
        if self.load is not None:
            self.load.stop()
        for recorder in (self.haproxy_recorder, self.agent_recorder, self.cpu_recorder):
            if recorder is not None:
                recorder.poller.stop()
        if self.load is not None:
            self.record.requests = self.load.snapshot()
        if self.haproxy_recorder is not None:
            self.record.haproxy_samples = self.haproxy_recorder.snapshot()
        if self.agent_recorder is not None:
            self.record.agent_samples = self.agent_recorder.snapshot()
        if self.cpu_recorder is not None:
            self.record.cpu_samples = self.cpu_recorder.snapshot()
        if self.haproxy is not None:
            self.record.haproxy_log = self.haproxy.output()
        self.load = self.haproxy_recorder = self.agent_recorder = self.cpu_recorder = None

    def make_cpu_groups(self) -> None:
        """A CPU cgroup per app, as its container would have; without one, no load weights and no starvation."""
        try:
            sweep_stale()
            self.cpu_groups = CpuGroups([instance.name for instance in self.instances])
        except (CgroupUnavailable, OSError) as error:
            self.record.starve_note = f"no CPU cgroups on this host ({error}): load weights off, no CPU starvation"
            self.event(self.record.starve_note)
            return
        for instance in self.instances:
            instance.cpu_group = self.cpu_groups.groups[instance.name]
        self.record.load_weights = True
        self.event(f"each app runs in a CPU cgroup of its own ({self.cpu_groups.parent}/<instance>); the policy "
                   "weighs them by CPU")

    def stop_hog(self) -> None:
        hog, self.hog = self.hog, None
        if hog is not None and hog.poll() is None:
            hog.kill()
            hog.wait()

    def status_lines(self) -> list[str]:
        """For the live view: HAProxy's status and weight and the agent's answer, per instance."""
        haproxy = self.haproxy_recorder.latest() if self.haproxy_recorder else {}
        agents: dict[str, str] = {}
        if self.agent_recorder is not None:
            for sample in self.agent_recorder.snapshot()[-6:]:
                agents[sample.server] = sample.answer
        served: dict[str, int] = {}
        if self.load is not None:
            for result in self.load.snapshot():
                served[result.server] = served.get(result.server, 0) + 1
        lines = []
        for instance in self.instances:
            server = haproxy.get(instance.name)
            state = f"{colour_status(server.status):<18} weight {server.weight:>3}" if server else "(no sample yet)"
            lines.append(f"{instance.name}  {state}  agent: {agents.get(instance.name, '-'):<28} "
                         f"served {served.get(instance.name, 0)}")
        return lines

    # -- the script ---------------------------------------------------------------------------------------
    def run(self) -> RunRecord:
        self.start()
        settings = self.settings
        self.progress.set_phase("steady load: ten busy workers per instance")
        self.wait_until(settings.memory_fault_at)
        self.memory_fault()
        self.wait_until(settings.sigkill_at)
        self.sigkill_worker()
        self.wait_until(settings.starve_at)
        self.starve_instance()
        self.wait_until(settings.sigterm_at, self._weight_watch(self.instances[0].name))
        self.sigterm_instance()
        self.progress.set_phase("waiting for the last scrapes")
        # At least one more scrape of the surviving instances after the last fault.
        self.wait_until(max(settings.end_at, time.monotonic() - self.record.started + settings.scrape_interval))
        self.record.ended = time.monotonic()
        self.stop_samplers()
        return self.record

    def _server(self, name: str) -> ServerSample | None:
        return self.haproxy_recorder.latest().get(name) if self.haproxy_recorder else None

    def memory_fault(self) -> None:
        settings, victim = self.settings, self.instances[1]
        self.progress.set_phase(f"{victim.name}: memory above {MEMORY_MAX_PERCENT} % of its limit")
        answer = victim.call("POST", f"/memory/fill?percent={MEMORY_FILL_PERCENT}&crossing={MEMORY_MAX_PERCENT}")
        self.record.memory_crossed_at = answer.get("crossed_at")
        self.record.memory_rss_peak = int(answer["rss"])
        self.event(f"{victim.name} allocated: RSS {answer['rss'] / 2**20:.0f} MiB of {answer['limit'] / 2**20:.0f} MiB "
                   f"({100 * answer['rss'] / answer['limit']:.0f} %)")
        seen_out = False

        def watch() -> None:
            nonlocal seen_out
            sample = self._server(victim.name)
            if not seen_out and sample is not None and not sample.in_rotation:
                seen_out = True
                self.event(f"HAProxy took {victim.name} out: {sample.status}, weight {sample.weight} "
                           f"(agent status {sample.agent_status or '-'})")

        self.wait_until(settings.memory_free_at, watch)
        if not seen_out:
            self.event(f"HAProxy still routes to {victim.name}: Candor missed the memory fault")
        answer = victim.call("POST", "/memory/free")
        self.record.memory_freed_at = answer.get("freed_at")
        self.event(f"{victim.name} freed its memory: RSS {answer['rss'] / 2**20:.0f} MiB")
        self.progress.set_phase(f"{victim.name}: back on a slow-start ramp")
        last_weight = -1

        def watch_ramp() -> None:
            nonlocal last_weight
            sample = self._server(victim.name)
            if sample is None or sample.base_status != "UP" or sample.weight == last_weight:
                return
            if last_weight < 0 or abs(sample.weight - last_weight) >= 10 or sample.weight == 100:
                self.event(f"{victim.name} weight {sample.weight}")
                last_weight = sample.weight

        self.wait_until(settings.sigkill_at - 0.5, watch_ramp)

    def _weight_watch(self, name: str) -> Callable[[], None]:
        """A poll for wait_until: an event each time HAProxy's weight of `name` moves (off slow start)."""
        last = -1

        def watch() -> None:
            nonlocal last
            sample = self._server(name)
            if sample is not None and sample.base_status == "UP" and sample.weight != last:
                if last >= 0:
                    self.event(f"{name} weight {sample.weight}")
                last = sample.weight

        return watch

    def starve_instance(self) -> None:
        """A lower CPU limit and a CPU hog in instance 1's cgroup: a noisy neighbour inside its container."""
        settings, victim = self.settings, self.instances[0]
        if victim.cpu_group is None:
            self.event(f"{victim.name}: CPU starvation skipped: {self.record.starve_note}")
            return
        self.progress.set_phase(f"{victim.name}: CPU-starved ({settings.starve_cores:g} cores and a CPU hog)")
        start = time.monotonic()
        victim.cpu_group.set_limit(settings.starve_cores)
        self.hog = subprocess.Popen(victim.cpu_group.wrap([sys.executable, "-m", "candor_demo.cpu_hog"]),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.event(f"{victim.name} CPU-starved: limit {settings.starve_cores:g} cores, a CPU hog in its cgroup")
        # Starved for the whole planned span even when the SIGKILL phase ran late (it waits for a ripe job).
        until = max(settings.starve_end_at, start - self.record.started + settings.starve_end_at - settings.starve_at)
        self.wait_until(until, self._weight_watch(victim.name))
        self.stop_hog()
        victim.cpu_group.set_limit(None)
        self.record.starve = StarveRecord(victim.name, start, time.monotonic(), settings.starve_cores)
        self.event(f"{victim.name} CPU back: hog stopped, no CPU limit")
        self.progress.set_phase(f"{victim.name}: CPU back, weight recovering")

    def sigkill_worker(self) -> None:
        settings, victim = self.settings, self.instances[2]
        self.progress.set_phase(f"{victim.name}: SIGKILL a worker mid-job")
        deadline = time.monotonic() + 3 * max(settings.job_max)
        while True:
            now = time.monotonic()
            busy = [w for w in victim.workers() if w.get("alive") and w.get("started") is not None]
            # A job that has run a while and still has a while to go: its seconds are what gets lost.
            ripe = [w for w in busy if now - w["started"] >= settings.sigkill_min_inflight
                    and w["started"] + w["length"] - now > 1.0]
            if ripe:
                target = max(ripe, key=lambda w: now - float(w["started"]))
                break
            if now > deadline:
                raise ScenarioError(f"{victim.name}: no worker ran a job for {settings.sigkill_min_inflight} s")
            time.sleep(0.05)
        killed_at = time.monotonic()
        os.kill(int(target["pid"]), signal.SIGKILL)
        self.record.kill = KillRecord(victim.name, int(target["slot"]), int(target["pid"]), killed_at,
                                      float(target["started"]))
        self.event(f"SIGKILL {victim.name} worker {target['slot']} (pid {target['pid']}) "
                   f"{killed_at - float(target['started']):.1f} s into a {float(target['length']):.1f} s job")

    def delete_instance(self, victim: Instance) -> tuple[float, str]:
        """What the kubelet does at a pod's deletion: both preStop hooks at once; returns when the app's ended.

        The monotonic time the hooks started, and the app hook's outcome (heard, timeout, no-drain, failed).
        """
        deleted_at = time.monotonic()
        waited: list[tuple[str, str]] = []
        hook = threading.Thread(target=lambda: waited.append(victim.run_wait_hook(60.0)), name="app-prestop",
                                daemon=True)
        hook.start()
        drained = victim.run_drain_hook()
        if drained.returncode == 0:
            self.event(f"{victim.name} deleted: its sidecar's preStop hook began the drain "
                       f"({drained.stdout.strip()})")
        else:
            self.event(f"{victim.name} deleted: its sidecar's preStop hook FAILED: {drained.stderr.strip()}")
        while hook.is_alive():
            self._poll_instances_except(victim)
            hook.join(0.1)
        outcome, text = waited[0] if waited else ("failed", "no answer")
        self.event(f"{victim.name} app's preStop hook returned after {time.monotonic() - deleted_at:.2f} s: {text}")
        return deleted_at, outcome

    def sigterm_instance(self) -> None:
        settings, victim = self.settings, self.instances[0]
        self.progress.set_phase(f"{victim.name}: deleted: drain handshake, SIGTERM, final scrape")
        deleted_at, outcome = self.delete_instance(victim)
        seen = self.haproxy.server_state(BACKEND, victim.name).status if self.haproxy is not None else ""
        term_at = time.monotonic()
        exit_at = victim.terminate_app(10.0)
        record = TermRecord(victim.name, term_at, exit_at, deleted_at=deleted_at, drain_outcome=outcome,
                            haproxy_status_at_term=seen)
        self.record.term = record
        self.event(f"SIGTERM {victim.name} app (HAProxy had it {seen}): exited after "
                   f"{(exit_at or time.monotonic()) - term_at:.2f} s")
        sidecar = victim.sidecar
        if sidecar is None or sidecar.poll() is not None:
            raise ScenarioError(f"{victim.name}: sidecar gone before its SIGTERM\n{victim.logs()}")
        record.sidecar_term_at = time.monotonic()
        sidecar.send_signal(signal.SIGTERM)
        self.event(f"SIGTERM {victim.name} sidecar: still answering drain, journals folded, waiting for the final "
                   "scrape")
        limit = parse_duration(settings.final_scrape_timeout, "finalScrapeTimeout") + 10.0
        deadline = time.monotonic() + limit
        while sidecar.poll() is None and time.monotonic() < deadline:
            self._poll_instances_except(victim)
            time.sleep(0.1)
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.wait()
            self.event(f"{victim.name} sidecar still running {limit:.0f} s after SIGTERM: killed")
        else:
            record.sidecar_exit_at = time.monotonic()
            record.sidecar_status = sidecar.returncode
            self.event(f"{victim.name} sidecar exited {sidecar.returncode} "
                       f"{record.sidecar_exit_at - record.sidecar_term_at:.1f} s after SIGTERM")

    def _poll_instances_except(self, skip: Instance) -> None:
        for instance in self.instances:
            if instance is not skip:
                instance.raise_if_dead()
