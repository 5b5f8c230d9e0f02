"""The drain handshake with real processes: a traced app, its sidecar, and real HAProxys polling the agent.

As in a terminating pod: `candor sidecar drain` (the sidecar container's preStop hook, a new process that
reaches the sidecar over its control socket) makes the agent answer `drain`; GET /drain/wait (an app
container's preStop hook) returns once every HAProxy polling the agent has heard it. Nothing reachable over
TCP begins a drain, and a drain with no termination behind it lifts itself.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor_demo.haproxy_process import HAProxyProcess
from harness.processes.sidecar_process import ROOT, AppProcess, SidecarProcess
from harness.processes.two_balancers import haproxy_config
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

# Each HAProxy connects from its own loopback address, as two ingress replicas do from their pod IPs.
SOURCES = {"lb1": ("127.0.0.2", 1.0), "lb2": ("127.0.0.3", 3.0)}  # source address, agent-inter (s)
MAX_WAIT = 12.0


def _haproxy_config(app: AppProcess, sidecar: SidecarProcess, source: str, agent_inter: float) -> str:
    return haproxy_config(app, sidecar, source, agent_inter, check_inter="1s")


@dataclass
class Pod:
    app: AppProcess
    sidecar: SidecarProcess
    balancers: dict[str, HAProxyProcess]

    def status(self, name: str) -> str:
        return self.balancers[name].server_state("app", "s1").base_status

    def all_up_and_polled(self) -> bool:
        states = [lb.server_state("app", "s1") for lb in self.balancers.values()]
        return all(s.base_status == "UP" and s.agent_status.startswith("L7") for s in states)


def _pod(stack: ExitStack, tmp_path: Path, balancers: dict[str, tuple[str, float]], grace_period: float = 30.0,
         max_wait: float = MAX_WAIT) -> Pod:
    config = {"slowStart": "0s", "evaluationInterval": "200ms", "finalScrapeTimeout": "1s",
              "drain": {"agentInterval": f"{max(inter for _, inter in balancers.values()):g}s",
                        "maxWait": f"{max_wait:g}s"}}
    app = stack.enter_context(AppProcess(tmp_path / "state", "s1"))
    sidecar = stack.enter_context(SidecarProcess(tmp_path / "state", config=config, grace_period=grace_period))
    lbs = {name: stack.enter_context(HAProxyProcess(_haproxy_config(app, sidecar, source, inter)))
           for name, (source, inter) in balancers.items()}
    pod = Pod(app, sidecar, lbs)
    wait_until(pod.all_up_and_polled, 20, "every HAProxy to see s1 UP after an agent poll")
    return pod


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    with ExitStack() as stack:
        yield _pod(stack, tmp_path, SOURCES)


def _wait_in_background(sidecar: SidecarProcess, path: str = "/drain/wait",
                        on_return: object = None) -> tuple[threading.Thread, dict[str, object]]:
    """GET the wait endpoint on a thread, as the kubelet's preStop hook does; `on_return()` runs at its answer."""
    result: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        status, headers, body = sidecar.get(path, timeout=60)
        result["seen"] = on_return() if callable(on_return) else None
        result.update(status=status, headers=headers, body=body.decode(), seconds=time.monotonic() - started)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_the_wait_returns_once_every_haproxy_has_heard_drain_then_sigterm_keeps_it(pod: Pod) -> None:
    # Both hooks start together at the pod's deletion: the app's wait, and the sidecar's drain command.
    thread, result = _wait_in_background(pod.sidecar, on_return=lambda: {n: pod.status(n) for n in pod.balancers})
    drained = pod.sidecar.run_drain()
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.startswith("draining: the agent answers drain")
    assert pod.sidecar.agent_line().startswith("drain")
    # A human asking how the drain goes: since when, who heard it, who is still awaited.
    notes = json.loads(pod.sidecar.get("/health?verbose")[2])["notes"]
    assert any(note.startswith("drain under way since ") and "begun by preStop" in note for note in notes), notes
    thread.join(MAX_WAIT + 10)
    assert not thread.is_alive()

    # When the wait answered, both HAProxys had already taken the server out of rotation.
    assert result["seen"] == {"lb1": "DRAIN", "lb2": "DRAIN"}, result
    assert result["headers"]["candor-drain"] == "heard", result  # type: ignore[index]
    assert "127.0.0.2" in str(result["body"]) and "127.0.0.3" in str(result["body"])
    # lb2 polls every 3 s: the wait lasted until it did, and not until maxWait.
    assert float(result["seconds"]) < MAX_WAIT  # type: ignore[arg-type]
    # /metrics counts and times it: one drain heard by both HAProxys and by this test's own agent poll above
    # (127.0.0.1: any client that polls the agent counts), none given up on.
    drained_in = wait_until(lambda: _sample(pod.sidecar, "candor_drain_seconds_count", outcome="heard"), 5,
                            "the drain to be counted")
    assert drained_in == 1
    assert 0 < _sample(pod.sidecar, "candor_drain_seconds_sum", outcome="heard") < MAX_WAIT
    assert _sample(pod.sidecar, "candor_drain_peers_heard_total") == 3
    assert _sample(pod.sidecar, "candor_drain_peers_given_up_total", reason="silent") == 0
    assert _sample(pod.sidecar, "candor_drain_peers_given_up_total", reason="timeout") == 0

    # A second drain command changes nothing; SIGTERM keeps the drain through the fold and the final scrape.
    again = pod.sidecar.run_drain()
    assert again.returncode == 0 and again.stdout.startswith("draining already"), again
    pod.sidecar.signal(15)
    assert pod.sidecar.agent_line().startswith("drain")
    assert pod.sidecar.wait(30) == 0
    assert all(pod.status(name) in ("DRAIN", "DOWN") for name in pod.balancers)


def test_a_haproxy_that_stops_polling_is_not_waited_for(tmp_path: Path) -> None:
    """An ingress replica that went away (or removed the server) sends nothing more: not waited for until maxWait."""
    with ExitStack() as stack:
        pod = _pod(stack, tmp_path, SOURCES)
        pod.balancers["lb2"].stop()
        thread, result = _wait_in_background(pod.sidecar, on_return=lambda: pod.status("lb1"))
        assert pod.sidecar.run_drain().returncode == 0
        thread.join(MAX_WAIT + 10)
        assert result["seen"] == "DRAIN"
        assert result["headers"]["candor-drain"] == "heard", result  # type: ignore[index]
        assert "drain heard by 1 load balancer(s) 127.0.0.2;" in str(result["body"])
        assert "removed by 1: 127.0.0.3" in str(result["body"])  # it stopped polling and checking
        # lb2's last poll came before the wait began: presumed gone one 3 s interval and a second after it
        # (HAProxy polls on a fixed timer), with a second's room for starting the drain command.
        assert float(result["seconds"]) <= 3.0 + 1.0 + 1.0  # type: ignore[arg-type]
        wait_until(lambda: _sample(pod.sidecar, "candor_drain_seconds_count", outcome="removed") == 1, 5,
                   "the drain to be counted as ended by a peer that took the server out")
        assert _sample(pod.sidecar, "candor_drain_peers_heard_total") == 1
        assert _sample(pod.sidecar, "candor_drain_peers_given_up_total", reason="removed") == 1
        assert _sample(pod.sidecar, "candor_drain_peers_given_up_total", reason="silent") == 0


def _sample(sidecar: SidecarProcess, name: str, **labels: str) -> float:
    """One sample of the sidecar's /metrics, read with prometheus_client's parser."""
    for family in text_string_to_metric_families(sidecar.get("/metrics")[2].decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in /metrics")


def _raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_nothing_over_tcp_begins_a_drain(pod: Pod) -> None:
    sidecar = pod.sidecar
    attempts = [
        b"POST /drain/wait HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\ndrain",
        b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"PUT /drain/begin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"DELETE /drain/wait HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /drain HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /drain/start?now=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n",
        b"GET /drain/wait?atLeast=nonsense HTTP/1.1\r\nHost: x\r\n\r\n",
        b"drain\n",
    ]
    for attempt in attempts:
        answer = _raw_http(sidecar.http_port, attempt)
        assert not answer.startswith(b"HTTP/1.1 200"), (attempt, answer)
    for text in (b"drain\n", b"maint\n", b"candor-drain\r\n"):  # HAProxy's agent-send, or anyone's, is ignored
        with socket.create_connection(("127.0.0.1", sidecar.agent_port), timeout=5) as sock:
            sock.sendall(text)
            assert not sock.recv(1024).startswith(b"drain")

    # The wait endpoint itself only waits: no drain began, so it gives up after its start bound.
    status, headers, body = sidecar.get("/drain/wait", timeout=30)
    assert (status, headers["candor-drain"]) == (200, "no-drain"), body
    # Meanwhile every HAProxy polled again (agent-inter 1 s and 3 s, the wait took 5 s) and still sees UP.
    assert {name: pod.status(name) for name in pod.balancers} == {"lb1": "UP", "lb2": "UP"}
    assert sidecar.agent_line().startswith("up")
    status, _, body = sidecar.get("/health")
    assert b"drain" not in body
    assert b"candor_draining 0.0" in sidecar.get("/metrics")[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as another user")
def test_the_control_socket_refuses_another_user_even_when_it_can_connect(pod: Pod) -> None:
    path = pod.sidecar.control_socket
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # another user cannot even connect
    os.chmod(path.parent.parent, 0o755)
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o666)  # as if another container mounted the directory and the mode were lax
    client = (
        "import os, socket\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(os.environ['SOCK']); s.sendall(b'drain\\n')\n"
        "print(s.recv(1024).decode().strip())\n"
    )
    # The system interpreter, isolated: another user may not read this test run's virtualenv or home.
    answer = subprocess.run(["/usr/bin/python3", "-I", "-c", client], env={"SOCK": str(path)}, cwd="/",
                            capture_output=True, text=True, timeout=20, check=False)
    assert answer.stdout.startswith("refused: uid 65534"), (answer.stdout, answer.stderr)
    assert pod.sidecar.agent_line().startswith("up")
    unknown = subprocess.run(["/usr/bin/python3", "-I", "-c", client.replace("os.setgid(65534); os.setuid(65534)", "")
                              .replace("b'drain", "b'status")], env={"SOCK": str(path)}, cwd="/",
                             capture_output=True, text=True, timeout=20, check=False)
    assert unknown.stdout.startswith("refused: unknown command 'status'"), (unknown.stdout, unknown.stderr)
    assert pod.sidecar.agent_line().startswith("up")


def test_a_drain_without_a_termination_behind_it_lifts_itself(tmp_path: Path) -> None:
    grace = 1.0  # lifts grace + 5 s after it began
    with ExitStack() as stack:
        pod = _pod(stack, tmp_path, {"lb1": SOURCES["lb1"]}, grace_period=grace)
        began = time.monotonic()
        assert pod.sidecar.run_drain().returncode == 0
        pod.balancers["lb1"].wait_for_status("app", "s1", "DRAIN", 5)
        wait_until(lambda: pod.sidecar.agent_line().startswith("ready up"), 15, "the agent to say ready again")
        assert time.monotonic() - began >= grace + 5.0
        pod.balancers["lb1"].wait_for_status("app", "s1", "UP", 5)
        assert "drain lifted: no termination followed" in pod.sidecar.logs()


def test_drain_command_without_a_running_sidecar_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "candor_cli.main", "sidecar", "drain"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT),
                                 "CANDOR_CONTROL_SOCKET": str(tmp_path / "none.sock")},
                            capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("candor sidecar drain: no control socket at "), result.stderr


def test_the_wait_holds_at_least_a_composed_sleep(pod: Pod) -> None:
    assert pod.sidecar.run_drain().returncode == 0
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", pod.sidecar.http_port, timeout=30)
    connection.request("GET", "/drain/wait?atLeast=4")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Candor-Drain") == "heard"
    assert time.monotonic() - started >= 4.0
