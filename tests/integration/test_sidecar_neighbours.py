"""A hostile neighbour against a real sidecar's ports and state directory: the pod stays in rotation.

Every attack here is one any client that reaches the pod (or any process of the pod, for the state
directory) can make, and each one took the pod out of HAProxy, froze the sidecar's evaluation or
made it write outside its directory before the sidecar defended against it: waits sent and closed by
the hundred, held waits from one address or many, a flood of connections holding as much data as they
may, hundreds of pipelined requests in one write, hundreds of concurrent scrapes, a FIFO and symlinks
planted where the sidecar keeps its admin word. The figures the README quotes are printed (`-s`).
"""

from __future__ import annotations

import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor_demo.haproxy_process import HAProxyProcess
from candor_sidecar.admin_word import FILE_NAME
from candor_sidecar.drain.held_waits import PER_ADDRESS, TOTAL
from candor_sidecar.drain.state import START_WAIT
from harness.processes.ports import free_port
from harness.processes.sidecar_process import ROOT, AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

OPEN_FILES = 1024  # a common container soft limit, the one the attacks were first measured under
CONFIG = {"slowStart": "0s", "evaluationInterval": "200ms"}
WAIT = b"GET /drain/wait?atLeast=20 HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    with SidecarProcess(tmp_path / "state", config=CONFIG, open_files=OPEN_FILES, grace_period=30) as process:
        yield process


@pytest.fixture(autouse=True)
def _open_files() -> Iterator[None]:
    """This test process opens thousands of client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _sample(sidecar: SidecarProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(sidecar.get("/metrics")[2].decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in /metrics")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _answers_promptly(sidecar: SidecarProcess) -> float:
    """The agent says `up` and /health answers, each within a second; the slower of the two, in seconds."""
    started = time.monotonic()
    line = sidecar.agent_line(timeout=2)
    agent = time.monotonic() - started
    assert line.startswith("up "), line
    started = time.monotonic()
    status, _, _ = sidecar.get("/health", timeout=2)
    health = time.monotonic() - started
    assert status == 200
    assert max(agent, health) < 1.0, (agent, health)
    return max(agent, health)


def _readable(socks: list[socket.socket]) -> list[socket.socket]:
    ready, _, _ = select.select(socks, [], [], 0)
    return ready


def _status(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(5)
    answer = b""
    with suppress(ConnectionResetError):
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def _wait_from(sidecar: SidecarProcess, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5, source_address=(source, 0))
    sock.sendall(b"GET /drain/wait HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_700_waits_sent_and_closed_at_once_leave_the_agent_and_health_answering(sidecar: SidecarProcess) -> None:
    started = time.monotonic()
    for _ in range(700):
        with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
            sock.sendall(WAIT)
    sent = time.monotonic() - started
    slowest = max(_answers_promptly(sidecar) for _ in range(30))
    # Each wait ended when its client went away: none is held.
    wait_until(lambda: _sample(sidecar, "candor_drain_waits") == 0, 3, "every wait to be let go")
    print(f"\n700 waits sent and closed in {sent:.2f}s; agent and /health answered within {slowest * 1000:.1f} ms")


def test_without_a_drain_no_wait_outlasts_the_start_wait(sidecar: SidecarProcess) -> None:
    started = time.monotonic()
    status, headers, body = sidecar.get("/drain/wait?atLeast=20", timeout=START_WAIT + 10)
    assert status == 200 and headers["candor-drain"] == "no-drain", body
    assert time.monotonic() - started < START_WAIT + 1.0  # atLeast counts only once a drain has begun


def test_held_waits_are_capped_per_address_and_in_all_and_let_go_when_their_client_leaves(
        sidecar: SidecarProcess) -> None:
    socks: list[socket.socket] = []
    try:
        ours = [_wait_from(sidecar, "127.0.0.1") for _ in range(PER_ADDRESS + 24)]
        socks += ours
        # Past the cap, a wait is answered at once (429) instead of held.
        wait_until(lambda: len(_readable(ours)) >= 24, 5, "the waits over the per-address cap to be answered")
        refused = _readable(ours)
        assert len(refused) == 24
        assert all(_status(sock)[0] == 429 for sock in refused)
        # Many addresses: no more than TOTAL held in all.
        for index in range(2, 2 + TOTAL // PER_ADDRESS + 2):
            socks += [_wait_from(sidecar, f"127.0.0.{index}") for _ in range(PER_ADDRESS)]
        wait_until(lambda: _sample(sidecar, "candor_drain_waits") == TOTAL, 5, f"{TOTAL} waits to be held")
        answered = set(refused) | set(_readable(socks))  # the 429s stay open (kept alive), already read
        held = [sock for sock in socks if sock not in answered]
        assert len(held) == TOTAL
        _answers_promptly(sidecar)
        # A client that half-closes gets its answer at once; one that closes frees its slot at once.
        leaving, closing = held[:10], held[10:]
        for sock in leaving:
            sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        assert all(b"Candor-Drain: gone" in _status(sock)[1] for sock in leaving)
        assert time.monotonic() - started < 1.0
        for sock in closing:
            sock.close()
        wait_until(lambda: _sample(sidecar, "candor_drain_waits") == 0, 1.0, "the closed waits to be let go")
    finally:
        for sock in socks:
            sock.close()


def test_no_number_of_clients_brings_the_sidecar_near_its_memory_limit(tmp_path: Path) -> None:
    """Connections holding as much as they may (a head just under the cap), to both ports, and held waits
    from many addresses: the sidecar's resident memory stays far below the chart's 128Mi limit."""
    partial_head = b"GET /health HTTP/1.1\r\nX-Padding: " + b"a" * 15_000  # never finished
    socks: list[socket.socket] = []
    with SidecarProcess(tmp_path / "state", config=CONFIG) as sidecar:  # the open-file limit raised in full
        sidecar.get("/metrics")
        before = _rss_mib(sidecar.pid)
        try:
            for _ in range(4000):
                sock = socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5)
                with suppress(OSError):  # evicted meanwhile
                    sock.sendall(partial_head)
                socks.append(sock)
            socks += [socket.create_connection(("127.0.0.1", sidecar.agent_port), timeout=5) for _ in range(2000)]
            for index in range(2, 22):
                socks += [_wait_from(sidecar, f"127.0.0.{index}") for _ in range(PER_ADDRESS)]
            # Accepted after every connection of the flood (the kernel's queue is first in, first out).
            wait_until(lambda: sidecar.get("/health")[0] == 200, 10, "/health to answer after the flood")
            slowest = max(_answers_promptly(sidecar) for _ in range(10))
            during = _rss_mib(sidecar.pid)
        finally:
            for sock in socks:
                sock.close()
        print(f"\nRSS {before:.1f} MiB idle, {during:.1f} MiB with 4000 connections of 15 KB heads, 2000 agent "
              f"connections and {20 * PER_ADDRESS} waits; agent and /health within {slowest * 1000:.1f} ms")
        assert during - before < 24, (before, during)


def test_400_pipelined_requests_in_one_write_are_all_answered(sidecar: SidecarProcess) -> None:
    paths = ["/livez", "/health", "/readyz", "/nope"] * 100 + ["/metrics"]  # answered at once, but the last
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=10) as sock:
        sock.sendall(b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths))
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    statuses = [int(part.split(b" ", 1)[0]) for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert len(statuses) == len(paths) == 401
    assert statuses[3::4] == [404] * 100 and statuses[-1] == 200
    _answers_promptly(sidecar)
    assert "Traceback" not in sidecar.logs() and "RecursionError" not in sidecar.logs()


# 16 live journals of 256 series each: a read of every series costs tens of milliseconds.
JOURNAL_WRITERS = """
import sys, time
from prometheus_client import Counter
from candor_tracer import Tracer
counter = Counter("job_worked_seconds", "Seconds spent working on jobs", ["task", "worker"], registry=None)
tracers = [Tracer(state_dir=sys.argv[1]) for _ in range(16)]
for index, tracer in enumerate(tracers):
    for task in range(256):
        with tracer.trace(counter, task=f"task-{task}", worker=str(index)):
            pass
print("ready", flush=True)
while True:
    for tracer in tracers:
        tracer.heartbeat()
    time.sleep(0.2)
"""


def test_300_concurrent_scrapes_never_stall_the_evaluation(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with ExitStack() as stack:
        writers = subprocess.Popen([sys.executable, "-c", JOURNAL_WRITERS, str(state)], stdout=subprocess.PIPE,
                                   text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        stack.callback(writers.wait)
        stack.callback(writers.kill)
        assert writers.stdout is not None and writers.stdout.readline().strip() == "ready"
        sidecar = stack.enter_context(SidecarProcess(state, config=CONFIG, open_files=OPEN_FILES))
        wait_until(lambda: sidecar.agent_line().startswith("up "), 10, "the agent to see the app")
        before = sidecar.evaluations()
        scrapes = [socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=30) for _ in range(320)]
        answers: list[bytes] = []

        def read_all() -> None:
            for sock in scrapes:
                data = b""
                while chunk := sock.recv(1 << 20):
                    data += chunk
                answers.append(data)
                sock.close()

        started = time.monotonic()
        for sock in scrapes:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reader = threading.Thread(target=read_all)
        reader.start()
        livez, slowest = [], 0.0
        while reader.is_alive() or not livez:
            polled = time.monotonic()
            livez.append(sidecar.get("/livez", timeout=5)[0])
            assert sidecar.agent_line().startswith("up ")
            slowest = max(slowest, time.monotonic() - polled)
            time.sleep(0.1)
        reader.join()
        took = time.monotonic() - started
        assert set(livez) == {200}, livez  # the evaluation never stalled
        # Meanwhile the loop writes 320 bodies of 0.4 MB on two cores shared with the journal writers and
        # this test's reader: prompt, not instant.
        assert slowest < 2.0, slowest
        assert len(answers) == 320 and all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
        assert all(b'job_worked_seconds_total{task="task-255",worker="15"}' in answer for answer in answers)
        evaluated = sidecar.evaluations() - before
        assert evaluated >= took / 0.2 / 2, (evaluated, took)
        print(f"\n320 concurrent scrapes answered in {took:.2f}s; /livez and the agent within {slowest * 1000:.1f} ms; "
              f"{evaluated} evaluations meanwhile")


def test_a_fifo_and_symlinks_planted_for_the_admin_word_are_ignored(tmp_path: Path) -> None:
    """Without a control directory the admin word lives in the state directory, which the app can write."""
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    outside.mkdir()
    os.mkfifo(state / FILE_NAME)  # a read of it would block forever
    with SidecarProcess(state, config=CONFIG, env={"CANDOR_CONTROL_SOCKET": ""}) as sidecar:  # starts, listens
        assert sidecar.agent_line().startswith("up ")
        # Symlinks at every temporary name the sidecar could pick by its pid, and a few more.
        for name in (f".{FILE_NAME}.{sidecar.pid}.tmp", f".{FILE_NAME}.tmp", f"{FILE_NAME}.tmp"):
            (state / name).symlink_to(outside / name)
        sidecar.set_annotations({"candor.io/maintenance": "true"})
        wait_until(lambda: sidecar.agent_line().startswith("maint"), 10, "the agent to say maint")
        wait_until(lambda: (state / FILE_NAME).is_file(), 5, "the word to be recorded")
    assert os.listdir(outside) == []  # nothing written outside the directory
    assert (state / FILE_NAME).read_text() == "maint\n" and not (state / FILE_NAME).is_symlink()
    # The next sidecar lifts its predecessor's maint; a symlink at the name is never followed.
    (state / FILE_NAME).unlink()
    (outside / "word").write_text("drain\n")
    (state / FILE_NAME).symlink_to(outside / "word")
    with SidecarProcess(state, config=CONFIG, env={"CANDOR_CONTROL_SOCKET": ""}) as sidecar:
        assert sidecar.agent_line().startswith("up ")  # not `ready`: a planted word is not its predecessor's
        assert f"ignoring {state / FILE_NAME}" in sidecar.logs()


def test_with_a_control_directory_the_state_directory_is_never_consulted(tmp_path: Path) -> None:
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    outside.mkdir()
    (outside / "word").write_text("maint\n")
    (state / FILE_NAME).symlink_to(outside / "word")
    with SidecarProcess(state, config=CONFIG) as sidecar:
        assert sidecar.agent_line().startswith("up ")
        sidecar.set_annotations({"candor.io/maintenance": "true"})
        wait_until(lambda: (sidecar.control_dir / FILE_NAME).is_file(), 10, "the word in the control directory")
        assert (outside / "word").read_text() == "maint\n" and (state / FILE_NAME).is_symlink()
        sidecar.kill()
        sidecar.set_annotations({})
        sidecar.start()
        assert sidecar.agent_line().startswith("ready up ")  # its predecessor's maint, from its own directory


# The HealthPolicy's defaults (httpCheck 2 s, rise 2, fall 3; agentCheck 2 s), as `candor render` writes them.
def _haproxy_config(frontend: int, app: AppProcess, sidecar: SidecarProcess) -> str:
    return f"""
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    retries 0

frontend web
    bind 127.0.0.1:{frontend}
    default_backend app

backend app
    option httpchk GET /health
    server s1 127.0.0.1:{app.port} check port {sidecar.http_port} inter 2s rise 2 fall 3 \
agent-check agent-addr 127.0.0.1 agent-port {sidecar.agent_port} agent-inter 2s
"""


def test_haproxy_keeps_routing_to_the_pod_through_the_flood(tmp_path: Path) -> None:
    import http.client

    with ExitStack() as stack:
        app = stack.enter_context(AppProcess(tmp_path / "state", "s1"))
        sidecar = stack.enter_context(SidecarProcess(tmp_path / "state", config=CONFIG, open_files=OPEN_FILES,
                                                     grace_period=30))
        frontend = free_port()
        haproxy = stack.enter_context(HAProxyProcess(_haproxy_config(frontend, app, sidecar)))
        wait_until(lambda: haproxy.server_state("app", "s1").base_status == "UP", 15, "s1 UP")
        stop = threading.Event()
        idle: list[socket.socket] = []
        opened = [0]

        def flood() -> None:
            while not stop.is_set():
                for _ in range(700):
                    with suppress(OSError), socket.create_connection(("127.0.0.1", sidecar.http_port)) as sock:
                        sock.sendall(WAIT)
                for port in (sidecar.http_port, sidecar.agent_port):
                    for _ in range(300):
                        with suppress(OSError):
                            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                            opened[0] += 1
                while len(idle) > 2000:  # more than both budgets, held open
                    idle.pop(0).close()

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        stack.callback(lambda: [sock.close() for sock in idle])
        stack.callback(thread.join)
        stack.callback(stop.set)
        failed, sent, states, checks = 0, 0, set(), set()
        until = time.monotonic() + 10.0  # five check intervals: three failed checks would take it out
        while time.monotonic() < until:
            connection = http.client.HTTPConnection("127.0.0.1", frontend, timeout=5)
            try:
                connection.request("GET", "/")
                failed += connection.getresponse().status != 200
            except OSError:
                failed += 1
            finally:
                connection.close()
            sent += 1
            state = haproxy.server_state("app", "s1")
            states.add(state.base_status)
            checks.add(state.check_status)
            time.sleep(0.05)
        assert (failed, states) == (0, {"UP"}), (failed, sent, states, checks)
        assert opened[0] > 2000  # the flood did run
        print(f"\nthrough HAProxy during the flood: {sent} requests, {failed} failed, server states {states}")
