"""Load-weights benchmark: a CPU-starved replica behind HAProxy, with and without Candor's load weights.

    sudo .venv/bin/python -m bench.weights [--seconds 30] [--rate 100]

Three replicas of an app whose requests cost CPU (harness/apps/cpu_app.py: 4 workers, declared), each in a
CPU cgroup of its own with a CFS quota like a container's CPU limit: two get `--cores`, the starved one a
fraction of that (needs root for the cgroups; v1 or v2). Each replica has two real sidecars reading its
journals, one configured from a policy without load weights and one from the same policy with
`agentCheck.weight` (both from `render_sidecar_config`). One real HAProxy holds three backends rendered by
`candor render`'s code: `roundrobin` and `leastconn` polling the plain sidecars, and Candor's load weights
with `roundrobin` (`candor`) and with `leastconn` (`candor_leastconn`, for information) polling the weighted
ones. A steady load goes through each in turn (the same replicas, one
backend at a time, the weights back at 100 % before each), and the table says per backend: p50/p99 latency,
each replica's share of requests, and how often HAProxy's weights changed.

Targets: p99 with load weights <= 0.7 x roundrobin's and <= leastconn's; the starved replica's weight
settles (stays within one step of its final value) within three agent intervals of the load starting, at a
share no larger than what keeps it at the policy's target load (or its share of the capacity, if larger);
at steady load the weights change at most 6 times a minute. Writes bench/results/weights.json; exits 1 when
one is missed, 2 when it cannot run here. bench/weights_node.py measures the same with pods on the test node,
with this module's load, backends, table and targets.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import Results
from candor_demo.haproxy_process import HAProxyProcess, check_config
from candor_demo.loadgen import LoadGenerator, RequestResult
from candor_operator.policy import HealthPolicy, parse_policy
from candor_operator.render import Server, render_backend, render_sidecar_config
from harness.processes.cpu_groups import CgroupUnavailable, CpuGroup
from harness.processes.ports import free_port
from harness.processes.sidecar_process import SidecarProcess
from harness.processes.waiting import wait_until

TITLE = "Load weights: a CPU-starved replica behind HAProxy"
ABOUT = """\
Three replicas of an app whose requests cost CPU, each in a CPU cgroup with a CFS quota like a container's
CPU limit, one of them starved; one real HAProxy with a backend per balancing choice (`roundrobin`,
`leastconn`, and Candor's load weights with each), the weights coming from real sidecars reading the
replicas' journals. The same steady load goes through each backend in turn; the table gives each backend's
latency, each replica's share of the requests and how often HAProxy's weights changed. Needs root (the
cgroups)."""

ROOT = Path(__file__).resolve().parents[1]
AGENT_INTERVAL = 1.0
SPEC: dict[str, Any] = {
    "selector": {"matchLabels": {"app": "bench"}},
    "httpCheck": {"interval": "2s"},
    "agentCheck": {"interval": f"{AGENT_INTERVAL:g}s"},
    "slowStart": "0s",  # the weight is the load factor alone: what this measures
}
TARGET_PERCENT, STEP_PERCENT = 70, 10
WEIGHT: dict[str, Any] = {"from": ["cpu", "occupancy"], "targetPercent": TARGET_PERCENT, "minPercent": 10,
                          "stepPercent": STEP_PERCENT}
MAX_CHANGES_PER_MINUTE = 6
BACKENDS = ("roundrobin", "leastconn", "candor", "candor_leastconn")  # measured in this order


@dataclass
class Replica:
    name: str
    cores: float
    group: CpuGroup
    state: Path
    port: int = field(default_factory=free_port)
    app: subprocess.Popen[bytes] | None = None
    plain: SidecarProcess | None = None
    weighted: SidecarProcess | None = None

    def start_app(self, cost_ms: float, workers: int) -> None:
        # Heartbeats every 0.25 s (the README's advice where reaction time matters): CPU figures reach the sidecar
        # twice as often as by default.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CANDOR_STATE_DIR": str(self.state),
               "CANDOR_HEARTBEAT_INTERVAL": "0.25"}
        self.app = subprocess.Popen(
            [sys.executable, "-m", "harness.apps.cpu_app", "--port", str(self.port), "--name", self.name,
             "--workers", str(workers), "--cost-ms", f"{cost_ms:g}"],
            env=env, cwd=ROOT, stdin=subprocess.DEVNULL, preexec_fn=self.group.join)

    def stop_app(self) -> None:
        if self.app is not None and self.app.poll() is None:
            self.app.kill()
            self.app.wait()


def sidecar_config(policy: HealthPolicy) -> dict[str, Any]:
    """The rendered sidecar config without what SidecarProcess places on this host (state dir, ports)."""
    config = render_sidecar_config(policy)
    for key in ("stateDir", "podInfoDir", "http", "agent"):
        config.pop(key)
    return config


def haproxy_config(plain: HealthPolicy, weighted: HealthPolicy, plain_servers: list[Server],
                   weighted_servers: list[Server], fronts: dict[str, int]) -> str:
    """A frontend per backend (`fronts`: backend -> port) and the backends `candor render`'s code gives:
    `roundrobin` and `leastconn` from the policy without load weights on `plain_servers`, `candor` and
    `candor_leastconn` from the policy with them on `weighted_servers`."""
    def leastconn(backend: str) -> str:
        return backend.replace("balance roundrobin", "balance leastconn")

    backends = [
        render_backend(plain, plain_servers, name="roundrobin"),
        leastconn(render_backend(plain, plain_servers, name="leastconn")),
        render_backend(weighted, weighted_servers, name="candor"),
        leastconn(render_backend(weighted, weighted_servers, name="candor_leastconn")),
    ]
    lines = ["global", "    maxconn 4000", "", "defaults", "    mode http", "    timeout connect 2s",
             "    timeout client 30s", "    timeout server 30s", ""]
    for name, port in fronts.items():
        lines += [f"frontend fe_{name}", f"    bind 127.0.0.1:{port}", f"    default_backend {name}", ""]
    return "\n".join(lines) + "\n" + "\n".join(backends)


def local_servers(replicas: list[Replica], which: str) -> list[Server]:
    """The replicas as HAProxy servers, each with the check and agent ports of its `plain` or `weighted`
    sidecar (all of them on this host)."""
    chosen = [(r, r.plain if which == "plain" else r.weighted) for r in replicas]
    return [Server(r.name, f"127.0.0.1:{r.port}", s.http_port, s.agent_port) for r, s in chosen if s]


@dataclass
class Phase:
    backend: str
    results: list[RequestResult]
    weights: list[tuple[float, dict[str, int]]]  # (seconds since load start, weight per server)
    warmup: float

    def measured(self) -> list[RequestResult]:
        start = min((r.at - r.seconds for r in self.results), default=0.0) + self.warmup
        return [r for r in self.results if r.at - r.seconds >= start]

    def latency(self, quantile: float) -> float:
        ok = sorted(r.seconds for r in self.measured() if r.status == 200)
        return ok[min(len(ok) - 1, int(quantile * len(ok)))] if ok else float("inf")

    def shares(self) -> dict[str, float]:
        ok = [r.server for r in self.measured() if r.status == 200]
        return {name: 100.0 * ok.count(name) / len(ok) for name in sorted(set(ok))} if ok else {}

    def errors(self) -> int:
        return sum(r.status != 200 for r in self.measured())

    def changes_per_minute(self) -> float:
        steady = [w for t, w in self.weights if t >= self.warmup]
        if len(steady) < 2:
            return 0.0
        changes = sum(a != b for a, b in itertools.pairwise(steady))
        return 60.0 * changes / max(self.weights[-1][0] - self.warmup, 1.0)

    def settle_seconds(self, server: str, step: float) -> float | None:
        """When `server`'s weight last left a band of one step around its final value (the median of the last
        third of the run); None when it never came within it."""
        series = [(t, w.get(server, 0)) for t, w in self.weights]
        if not series:
            return None
        tail = [w for t, w in series if t >= series[-1][0] * 2 / 3]
        final = statistics.median(tail)
        outside = [t for t, w in series if abs(w - final) > step]
        return outside[-1] if outside else 0.0


def run_phase(haproxy: HAProxyProcess, backend: str, port: int, rate: float, seconds: float,
              warmup: float) -> Phase:
    load = LoadGenerator(port, rate, clients=32, path="/work")
    weights: list[tuple[float, dict[str, int]]] = []
    began = time.monotonic()
    load.start()
    try:
        while (now := time.monotonic()) < began + warmup + seconds:
            states = haproxy.server_states()
            weights.append((now - began, {s: st.weight for (b, s), st in states.items() if b == backend}))
            time.sleep(0.25)
    finally:
        load.stop()
    return Phase(backend, load.snapshot(), weights, warmup)


def wait_full_weights(haproxy: HAProxyProcess, backend: str, servers: list[str]) -> None:
    def full() -> bool:
        states = haproxy.server_states()
        return all(states[(backend, s)].weight == 100 and states[(backend, s)].base_status == "UP" for s in servers)

    try:
        wait_until(full, 90, f"every server of {backend} UP at weight 100", interval=0.25)
    except AssertionError:
        states = haproxy.server_states()
        raise AssertionError("; ".join(f"{s}: {st.status} weight {st.weight} check {st.check_status} agent "
                                       f"{st.agent_status}" for (b, s), st in states.items() if b == backend)) from None


def measure(haproxy: HAProxyProcess, fronts: dict[str, int], servers: list[str],
            args: argparse.Namespace) -> list[Phase]:
    """The steady load through each backend in turn, every weight back at 100 % before each."""
    phases = []
    for backend, port in fronts.items():
        wait_full_weights(haproxy, backend, servers)
        for weighted_backend in ("candor", "candor_leastconn"):  # the last load left the weighted sidecars
            wait_full_weights(haproxy, weighted_backend, servers)
        phases.append(run_phase(haproxy, backend, port, args.rate, args.seconds, args.warmup))
    return phases


def load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load and the CPU limits, the same options for every rig of this benchmark."""
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per backend")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--cost-ms", type=float, default=2.0, help="CPU milliseconds per request")
    parser.add_argument("--cores", type=float, default=0.4, help="CPU limit of the two healthy replicas")
    parser.add_argument("--starved", type=float, default=0.05, help="CPU limit of the starved replica")
    parser.add_argument("--trace", action="store_true", help="print HAProxy's weights of the candor backend")


def policy_specs(selector: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HealthPolicy spec without load weights and the same one with them (`selector` replacing SPEC's)."""
    spec = {**SPEC, "selector": selector} if selector else SPEC
    return spec, {**spec, "agentCheck": {**spec["agentCheck"], "weight": WEIGHT}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_arguments(parser)
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        print("weights.py: needs haproxy (make system-deps)")
        return 2
    tag = f"candor-bench-weights-{os.getpid()}"
    try:
        groups = [CpuGroup(f"{tag}/{name}", cores) for name, cores in
                  (("s1", args.cores), ("s2", args.cores), ("s3", args.starved))]
    except CgroupUnavailable as error:
        print(f"weights.py: {error}; run it as root")
        return 2
    plain, weighted = (parse_policy(spec) for spec in policy_specs())
    workdir = Path(tempfile.mkdtemp(prefix="candor-bench-weights-"))
    replicas = [Replica(g.relative.rsplit("/", 1)[1], g.cores, g, workdir / g.relative.rsplit("/", 1)[1])
                for g in groups]
    fronts = {name: free_port() for name in BACKENDS}
    try:
        with ExitStack() as stack:
            for replica in replicas:
                replica.group.create()
                stack.callback(replica.group.remove)
                stack.callback(replica.stop_app)
                replica.start_app(args.cost_ms, workers=4)
                replica.plain = stack.enter_context(SidecarProcess(replica.state, config=sidecar_config(plain)))
                replica.weighted = stack.enter_context(
                    SidecarProcess(replica.state, config=sidecar_config(weighted)))
            config = haproxy_config(plain, weighted, local_servers(replicas, "plain"),
                                    local_servers(replicas, "weighted"), fronts)
            checked = check_config(config)
            if checked.returncode != 0:
                print(f"weights.py: haproxy -c refused the rendered config:\n{checked.stdout}{checked.stderr}")
                return 1
            haproxy = stack.enter_context(HAProxyProcess(config))
            phases = measure(haproxy, fronts, [r.name for r in replicas], args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report("weights", "replicas", phases, [(r.name, r.cores) for r in replicas], args)


def report(bench: str, kind: str, phases: list[Phase], replicas: list[tuple[str, float]],
           args: argparse.Namespace) -> int:
    """Prints the side-by-side table and the targets, writes bench/results/<bench>.json; 0 when every target
    is met. `replicas`: (name, CPU limit in cores) of each, the starved one last; `kind`: what they are."""
    by = {phase.backend: phase for phase in phases}
    starved = replicas[-1][0]
    capacity_share = 100.0 * args.starved / sum(cores for _, cores in replicas)
    # The share that keeps the starved replica at the target load (CPU only; request overhead left out).
    target_share = 100.0 * TARGET_PERCENT / 100 * args.starved / (args.rate * args.cost_ms / 1000)
    share_bound = max(capacity_share, min(target_share, 100.0 / 3))
    setup = (f"{len(replicas)} {kind} ({', '.join(f'{name} {cores:g} cores' for name, cores in replicas)}), "
             f"{args.rate:g} requests/s of {args.cost_ms:g} ms CPU, {args.seconds:g} s measured per backend "
             f"after {args.warmup:g} s; agent-inter {AGENT_INTERVAL:g}s")
    print(setup)
    results = Results(bench)
    results.note(setup)
    names = [name for name, _ in replicas]
    table = results.table("backend", "p50 ms", "p99 ms", "errors", *(f"{name} share" for name in names),
                          "weight changes/min")
    print(f"| backend | p50 ms | p99 ms | errors | {' | '.join(f'{name} share' for name in names)} "
          f"| weight changes/min |")
    print("|---|---|---|---|" + "---|" * len(replicas) + "---|")
    for phase in phases:
        shares = phase.shares()
        print(f"| {phase.backend} | {1000 * phase.latency(0.5):.1f} | {1000 * phase.latency(0.99):.1f} | "
              f"{phase.errors()} | " + " | ".join(f"{shares.get(name, 0.0):.1f} %" for name in names) +
              f" | {phase.changes_per_minute():.1f} |")
        table.add(phase.backend, f"{1000 * phase.latency(0.5):.1f}", f"{1000 * phase.latency(0.99):.1f}",
                  phase.errors(), *(f"{shares.get(name, 0.0):.1f} %" for name in names),
                  f"{phase.changes_per_minute():.1f}")
    candor, rr, lc = by["candor"], by["roundrobin"], by["leastconn"]
    if args.trace:
        for t, weights in candor.weights:
            print(f"  {t:6.2f} s  " + "  ".join(f"{name} {weight:3d}" for name, weight in sorted(weights.items())))
    settle = candor.settle_seconds(starved, STEP_PERCENT)
    starved_share = candor.shares().get(starved, 0.0)
    # (what, target, measured, met): printed as one line each, recorded as the run's targets.
    checks = [
        ("p99 with load weights", f"<= 0.7 x roundrobin's ({1000 * 0.7 * rr.latency(0.99):.1f} ms)",
         f"{1000 * candor.latency(0.99):.1f} ms", candor.latency(0.99) <= 0.7 * rr.latency(0.99)),
        ("p99 with load weights", f"<= leastconn's ({1000 * lc.latency(0.99):.1f} ms)",
         f"{1000 * candor.latency(0.99):.1f} ms", candor.latency(0.99) <= lc.latency(0.99)),
        (f"{starved}'s weight settles", "within 3 agent intervals of the load",
         f"{settle:.1f} s" if settle is not None else "never",
         settle is not None and settle <= 3 * AGENT_INTERVAL),
        (f"{starved}'s share", f"<= {share_bound:.1f} % + 5 (capacity share {capacity_share:.1f} %, share at the "
         f"target load {target_share:.1f} %)", f"{starved_share:.1f} %", starved_share <= share_bound + 5),
        ("weight changes at steady load", f"at most {MAX_CHANGES_PER_MINUTE} a minute",
         f"{candor.changes_per_minute():.1f}", candor.changes_per_minute() <= MAX_CHANGES_PER_MINUTE),
    ]
    held = results.table("held to", "target", "measured", "result")
    for what, target, measured, ok in checks:
        print(f"{'ok  ' if ok else 'MISS'} {what} {target}: {measured}")
        held.add(what, target, measured, "ok" if ok else "MISSED")
        results.target(what, target, measured, ok)
    results.write()
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
