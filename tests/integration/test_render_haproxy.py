"""The rendered HAProxy backend, checked by a real `haproxy -c` and run against live sidecars.

Two "pods" on 127.0.0.1, each a real HTTP app plus a real `candor sidecar` configured by
render_sidecar_config; a real HAProxy runs the section render_backend produced (the pods share one
host here, so each server line overrides the check and agent ports). HAProxy's own stats socket says
what it thinks of each server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_demo.haproxy_process import HAProxyProcess, check_config
from candor_operator.policy import parse_policy
from candor_operator.render import Server, render_annotations, render_backend, render_sidecar_config
from harness.processes.ports import free_port
from tests.cases.policy_cases import FULL_SPEC, valid_spec

pytestmark = pytest.mark.integration

GLOBAL = """\
global
    maxconn 200
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
"""

POLICIES = {
    "defaults": valid_spec(),
    "full": FULL_SPEC,
    "no-slowstart": valid_spec(slowStart="0s"),
    "layer4-sudden-death": valid_spec(passive={"observe": "layer4", "onError": "sudden-death"}),
    "fastinter": valid_spec(passive={"observe": "layer7", "onError": "fastinter", "errorLimit": 1}),
    "fractional-times": valid_spec(httpCheck={"interval": "1.5s", "timeout": "250ms"}, agentCheck={"interval": "750ms"},
                                   maxConn=1, queueTimeout="1m30s"),
}


@pytest.mark.parametrize("controller", ["haproxytech", "haproxy-ingress"])
@pytest.mark.parametrize("spec", list(POLICIES.values()), ids=list(POLICIES))
def test_haproxy_accepts_every_rendered_backend(spec: dict[str, Any], controller: str) -> None:
    backend = render_backend(parse_policy(spec), [Server("pod-a", "10.0.0.1:8080"), Server("pod-b", "10.0.0.2:8080")],
                             controller=controller)
    config = GLOBAL + "frontend fe\n    bind 127.0.0.1:1\n    default_backend candor\n" + backend
    result = check_config(config)
    assert result.returncode == 0, result.stdout + result.stderr + config
    assert "[WARNING]" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_haproxy_refuses_a_broken_section() -> None:
    """The check above can fail: a mangled keyword is caught by the same `haproxy -c`."""
    backend = render_backend(parse_policy(valid_spec()), [Server("a", "10.0.0.1:80")])
    backend = backend.replace("agent-check", "agent-chek")
    result = check_config(GLOBAL + backend)
    assert result.returncode != 0


# --- live: real apps, real sidecars, real HAProxy -------------------------------------------------

LIVE_SPEC = valid_spec(
    httpCheck={"interval": "500ms", "timeout": "400ms", "rise": 1, "fall": 2},
    agentCheck={"interval": "500ms"},
    slowStart="2s",
    maxConn=10,
    queueTimeout="2s",
    passive={"observe": "layer7", "errorLimit": 10, "onError": "fail-check"},
)


@dataclass
class Pod:
    name: str
    app_port: int
    http_port: int
    agent_port: int
    podinfo: Path
    app: subprocess.Popen[bytes]
    sidecar: subprocess.Popen[bytes]

    def server(self) -> Server:
        return Server(self.name, f"127.0.0.1:{self.app_port}", check_port=self.http_port, agent_port=self.agent_port)


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout}s") from None
            time.sleep(0.05)


def _start_pod(name: str, root: Path, controller: str) -> Pod:
    policy = parse_policy({**LIVE_SPEC, "ingress": {"controller": controller}})
    home = root / name
    (home / "www").mkdir(parents=True)
    (home / "www" / "index.html").write_text(name)
    podinfo = home / "podinfo"
    podinfo.mkdir()
    (podinfo / "annotations").write_text('candor.io/inject="true"\n')
    config = render_sidecar_config(policy)
    config["stateDir"] = str(home / "state")
    config["podInfoDir"] = str(podinfo)
    (home / "state").mkdir()
    (home / "sidecar.yaml").write_text(yaml.safe_dump(config))
    app_port, http_port, agent_port = free_port(), free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
    app = subprocess.Popen([sys.executable, "-m", "http.server", str(app_port), "--bind", "127.0.0.1",
                            "--directory", str(home / "www")], **quiet)  # type: ignore[call-overload]
    log = (home / "sidecar.log").open("wb")
    sidecar = subprocess.Popen([sys.executable, "-m", "candor_sidecar", "--config", str(home / "sidecar.yaml"),
                                "--http-port", str(http_port), "--agent-port", str(agent_port)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    pod = Pod(name, app_port, http_port, agent_port, podinfo, app, sidecar)
    _wait_http(f"http://127.0.0.1:{app_port}/", 10, app)
    _wait_http(f"http://127.0.0.1:{http_port}/livez", 15, sidecar)
    return pod


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
    process.wait(10)


@pytest.fixture(params=["haproxytech", "haproxy-ingress"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[HAProxyProcess, list[Pod], int]]:
    controller: str = request.param
    pods: list[Pod] = []
    try:
        pods = [_start_pod("pod-a", tmp_path, controller), _start_pod("pod-b", tmp_path, controller)]
        front = free_port()
        backend = render_backend(parse_policy(LIVE_SPEC), [p.server() for p in pods], name="candor",
                                 controller=controller)
        config = GLOBAL + f"frontend fe\n    bind 127.0.0.1:{front}\n    default_backend candor\n" + backend
        with HAProxyProcess(config) as haproxy:
            yield haproxy, pods, front
    finally:
        for pod in pods:
            _stop(pod.sidecar)
            _stop(pod.app)


def _answers(front: int, count: int) -> set[str]:
    seen = set()
    for _ in range(count):
        with urllib.request.urlopen(f"http://127.0.0.1:{front}/", timeout=5) as response:
            seen.add(response.read().decode())
    return seen


def _wait_weight(haproxy: HAProxyProcess, server: str, weight: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (state := haproxy.server_state("candor", server)).weight != weight:
        assert time.monotonic() < deadline, f"{server} weight {state.weight} (want {weight}): {state}"
        time.sleep(0.1)


def _wait_agent_answered(haproxy: HAProxyProcess, server: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (state := haproxy.server_state("candor", server)).agent_status.startswith("L7"):
        assert time.monotonic() < deadline, f"{server}: the agent never answered: {state}"
        time.sleep(0.05)


def test_rendered_backend_runs_against_live_sidecars(live: tuple[HAProxyProcess, list[Pod], int]) -> None:
    haproxy, (pod_a, pod_b), front = live
    policy = parse_policy(LIVE_SPEC)
    check, agent = policy.http_check, policy.agent_check
    for pod in (pod_a, pod_b):
        haproxy.wait_for_status("candor", pod.name, "UP", timeout=15)
        _wait_agent_answered(haproxy, pod.name, timeout=10)
        # `weight 100` and the agent's percentage: full weight once the sidecar's ramp is over.
        _wait_weight(haproxy, pod.name, 100, timeout=policy.slow_start + 10)
        state = haproxy.server_state("candor", pod.name)
        assert state.check_status == "L7OK" and state.agent_status.startswith("L7"), state
    assert _answers(front, 20) == {"pod-a", "pod-b"}

    # A sidecar that stops answering: HAProxy's active check (the rendered inter/timeout/fall) takes b out.
    os.kill(pod_b.sidecar.pid, signal.SIGSTOP)
    bound = check.fall * (check.interval + check.effective_timeout) + check.interval + 3.0
    took = haproxy.wait_for_status("candor", "pod-b", "DOWN", timeout=bound + 10)
    assert took <= bound, f"DOWN after {took:.1f}s, rendered checks allow {bound:.1f}s"
    assert _answers(front, 20) == {"pod-a"}

    os.kill(pod_b.sidecar.pid, signal.SIGCONT)
    haproxy.wait_for_status("candor", "pod-b", "UP", timeout=check.rise * check.interval + 10)

    # The agent speaks for the pod: the maintenance annotation puts a into MAINT, its removal brings it back.
    (pod_a.podinfo / "annotations").write_text('candor.io/maintenance="true"\n')
    took = haproxy.wait_for_status("candor", "pod-a", "MAINT", timeout=agent.interval + 10)
    assert took <= agent.interval + 1.0 + 3.0, f"MAINT after {took:.1f}s"
    assert _answers(front, 10) == {"pod-b"}
    (pod_a.podinfo / "annotations").write_text("")
    haproxy.wait_for_status("candor", "pod-a", "UP", timeout=agent.interval + 10)


# --- the annotations themselves, placed the way each controller places them -----------------------


def _haproxytech_backend(annotations: dict[str, str], servers: list[tuple[str, str]]) -> str:
    """A backend as the haproxytech controller builds it: check-http → option httpchk, timeout-check,
    the backend-config-snippet before the server lines, `check inter <check-interval>` and
    `maxconn <pod-maxconn>` on each server."""
    lines = ["backend svc", "    mode http", f"    option httpchk {annotations['haproxy.org/check-http']}",
             f"    timeout check {annotations['haproxy.org/timeout-check']}"]
    lines += [f"    {line}" for line in annotations["haproxy.org/backend-config-snippet"].splitlines()]
    extra = f" maxconn {annotations['haproxy.org/pod-maxconn']}" if "haproxy.org/pod-maxconn" in annotations else ""
    lines += [f"    server {name} {address} check inter {annotations['haproxy.org/check-interval']}{extra}"
              for name, address in servers]
    return "\n".join(lines) + "\n"


def _haproxy_ingress_backend(annotations: dict[str, str], servers: list[tuple[str, str]]) -> str:
    """A backend as haproxy-ingress's template builds it: `option httpchk <health-check-uri>`,
    `timeout queue`, config-backend before the servers, and per server `weight <initial-weight>`,
    `maxconn`, `check port … inter … rise … fall …`, `agent-check agent-port … agent-inter …`."""
    def key(name: str) -> str:
        return f"haproxy-ingress.github.io/{name}"

    lines = ["backend svc", "    mode http"]
    if key("timeout-queue") in annotations:
        lines.append(f"    timeout queue {annotations[key('timeout-queue')]}")
    lines.append(f"    option httpchk {annotations[key('health-check-uri')]}")
    lines += [f"    {line}" for line in annotations[key("config-backend")].splitlines()]
    for name, address in servers:
        line = f"    server {name} {address} weight {annotations[key('initial-weight')]}"
        if key("maxconn-server") in annotations:
            line += f" maxconn {annotations[key('maxconn-server')]}"
        line += (f" check port {annotations[key('health-check-port')]}"
                 f" inter {annotations[key('health-check-interval')]}"
                 f" rise {annotations[key('health-check-rise-count')]}"
                 f" fall {annotations[key('health-check-fall-count')]}"
                 f" agent-check agent-port {annotations[key('agent-check-port')]}"
                 f" agent-inter {annotations[key('agent-check-interval')]}")
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("spec", list(POLICIES.values()), ids=list(POLICIES))
def test_annotation_values_are_valid_haproxy_where_each_controller_puts_them(spec: dict[str, Any]) -> None:
    policy = parse_policy(spec)
    servers = [("SRV_1", "10.0.0.1:8080"), ("SRV_2", "10.0.0.2:8080")]
    for backend in (_haproxytech_backend(render_annotations(policy, "haproxytech"), servers),
                    _haproxy_ingress_backend(render_annotations(policy, "haproxy-ingress"), servers)):
        config = GLOBAL + "frontend fe\n    bind 127.0.0.1:1\n    default_backend svc\n" + backend
        result = check_config(config)
        assert result.returncode == 0, result.stdout + result.stderr + config
        assert "[WARNING]" not in result.stdout + result.stderr, result.stdout + result.stderr + config


# --- one ramp: HAProxy's effective weight is the agent's weight, never scaled a second time ------------

RAMP_SPEC = valid_spec(
    httpCheck={"interval": "500ms", "timeout": "400ms", "rise": 1, "fall": 2},
    agentCheck={"interval": "500ms"},
    deadlock={"heartbeatTimeout": "3s", "maxJobDuration": "1m"},  # the journal's heartbeat is about 1 s apart
    slowStart="6s",
    maxConn=10,
)
STARTING = 1  # `show servers state` srv_op_state while HAProxy's own slowstart runs (SRV_ST_STARTING)


@dataclass(frozen=True)
class Sample:
    """One moment of one server, as HAProxy's stats socket shows it."""

    status: str
    agent: int  # srv_uweight: the weight the agent's `up N%` set (N of `weight 100`)
    effective: int  # `show stat` weight: what HAProxy balances with
    op_state: int  # srv_op_state: STARTING while HAProxy ramps on its own
    throttle: str  # `show stat` throttle: HAProxy's slowstart percentage, applied to weight and maxconn alike
    sessions: int  # scur
    queued: int  # qcur: requests waiting because the server is at its (dynamic) maxconn


def _servers_state(haproxy: HAProxyProcess, server: str) -> dict[str, str]:
    lines = haproxy.command("show servers state candor").splitlines()
    header = next(line for line in lines if line.startswith("# be_id")).lstrip("# ").split()
    rows = [dict(zip(header, line.split(), strict=False)) for line in lines if line and not line.startswith("#")]
    return next(row for row in rows if row.get("srv_name") == server)


def _sample(haproxy: HAProxyProcess, server: str) -> Sample:
    """Both views read as one moment: read again when an agent poll changed the weight in between."""
    while True:
        before = _servers_state(haproxy, server)
        stat = next(row for row in haproxy.stat_rows() if row["pxname"] == "candor" and row["svname"] == server)
        if _servers_state(haproxy, server)["srv_uweight"] == before["srv_uweight"]:
            return Sample(stat["status"].split(" ")[0], int(before["srv_uweight"]), int(stat["weight"] or 0),
                          int(before["srv_op_state"]), stat.get("throttle", ""), int(stat["scur"] or 0),
                          int(stat["qcur"] or 0))


def _ramp(haproxy: HAProxyProcess, server: str, timeout: float,
          during: Callable[[Sample], None] = lambda sample: None) -> list[Sample]:
    """Samples while the server is UP, from the first agent weight below 100 until it is back at 100."""
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout
    while not (samples and any(s.agent < 100 for s in samples) and samples[-1].agent == 100):
        assert time.monotonic() < deadline, [(s.agent, s.effective, s.status) for s in samples[::20]]
        sample = _sample(haproxy, server)
        if sample.status == "UP" and (samples or sample.agent < 100):
            samples.append(sample)
            during(sample)
    return samples


def _assert_one_ramp(samples: list[Sample]) -> None:
    assert [s.effective for s in samples] == [s.agent for s in samples], samples
    assert all(s.op_state != STARTING and not s.throttle for s in samples), samples
    assert len({s.agent for s in samples if 0 < s.agent < 100}) >= 3, samples  # a ramp in the agent's steps


def _start_traced_pod(home: Path, controller: str, app_port: int) -> subprocess.Popen[bytes]:
    """The app: traced, heartbeating into the pod's state directory as an app with the tracer does."""
    (home / "state").mkdir(parents=True)
    env = {**os.environ, "CANDOR_STATE_DIR": str(home / "state")}
    app = subprocess.Popen([sys.executable, "-m", "harness.apps.traced_app", "--port", str(app_port)], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{app_port}/", 10, app)
    config = render_sidecar_config(parse_policy({**RAMP_SPEC, "ingress": {"controller": controller}}))
    config["stateDir"] = str(home / "state")
    config["podInfoDir"] = str(home / "podinfo")
    (home / "podinfo").mkdir()
    (home / "podinfo" / "annotations").write_text("")
    (home / "sidecar.yaml").write_text(yaml.safe_dump(config))
    return app


@pytest.mark.parametrize("controller", ["haproxytech", "haproxy-ingress"])
def test_the_effective_weight_is_the_agents_ramp_alone(controller: str, tmp_path: Path) -> None:
    """A new pod and a recovered pod: HAProxy balances with exactly the weight the agent says at every
    moment of its ramp, never a fraction of it, and lets the full maxConn through from the first step."""
    policy = parse_policy(RAMP_SPEC)
    assert policy.max_conn is not None
    app_port, http_port, agent_port, front = free_port(), free_port(), free_port(), free_port()
    app = _start_traced_pod(tmp_path, controller, app_port)
    sidecar: subprocess.Popen[bytes] | None = None
    server = Server("pod", f"127.0.0.1:{app_port}", check_port=http_port, agent_port=agent_port)
    backend = render_backend(policy, [server], name="candor", controller=controller)
    config = GLOBAL + f"frontend fe\n    bind 127.0.0.1:{front}\n    default_backend candor\n" + backend
    try:
        with HAProxyProcess(config) as haproxy, ThreadPoolExecutor(policy.max_conn) as pool:
            # A new pod: its sidecar starts after HAProxy has the server (DOWN until then, as a new slot is).
            haproxy.wait_for_status("candor", "pod", "DOWN", timeout=15)
            sidecar = subprocess.Popen(
                [sys.executable, "-m", "candor_sidecar", "--config", str(tmp_path / "sidecar.yaml"),
                 "--http-port", str(http_port), "--agent-port", str(agent_port)],
                stdin=subprocess.DEVNULL, stdout=(tmp_path / "sidecar.log").open("wb"), stderr=subprocess.STDOUT)

            # Mid-ramp, maxConn slow requests at once: all of them reach the pod, none waits in HAProxy's queue
            # (slowstart would cut the pod's maxconn to its ramp percentage as well).
            held: list[Future[str]] = []

            def hold_max_conn(sample: Sample) -> None:
                if not held and 15 <= sample.agent <= 50:
                    url = f"http://127.0.0.1:{front}/slow?seconds=1.5"
                    held.extend(pool.submit(_fetch, url) for _ in range(policy.max_conn or 0))

            new_pod = _ramp(haproxy, "pod", timeout=policy.slow_start + 15, during=hold_max_conn)
            _assert_one_ramp(new_pod)
            assert held and [f.result(timeout=10) for f in held] == ["slow\n"] * policy.max_conn
            assert max(s.sessions for s in new_pod) == policy.max_conn, new_pod
            assert max(s.queued for s in new_pod) == 0, new_pod

            # A recovered pod: the app stalls (no heartbeat), the sidecar fails it, HAProxy takes it DOWN;
            # the app resumes, and the agent ramps it back.
            os.kill(app.pid, signal.SIGSTOP)
            haproxy.wait_for_status("candor", "pod", "DOWN", timeout=15)
            os.kill(app.pid, signal.SIGCONT)
            recovered = _ramp(haproxy, "pod", timeout=policy.slow_start + 15)
            _assert_one_ramp(recovered)
    finally:
        for process in (sidecar, app):
            if process is not None:
                _stop(process)


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())
