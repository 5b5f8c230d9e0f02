"""Garbage, thousands of idle connections, half-open and slow clients: /health and the agent keep answering."""

from __future__ import annotations

import os
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candor_sidecar.http_server import Limits
from harness.processes.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = Limits().header_timeout


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    state: Path = tmp_path_factory.mktemp("abuse") / "state"
    with SidecarProcess(state, config={"slowStart": "0s"}) as process:
        yield process


def _timed_health(sidecar: SidecarProcess) -> float:
    started = time.monotonic()
    status, _, body = sidecar.get("/health", timeout=5)
    assert status == 200 and b'"status"' in body
    return time.monotonic() - started


def _timed_agent(sidecar: SidecarProcess) -> float:
    started = time.monotonic()
    assert sidecar.agent_line().startswith(("up", "ready up"))
    return time.monotonic() - started


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the server ends the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_the_sidecar_raises_its_open_file_limit(sidecar: SidecarProcess) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with open(f"/proc/{sidecar.pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    soft = int(line.split()[3])
    assert soft == hard or soft >= 1 << 20


def test_garbage_gets_a_400_and_nothing_breaks(sidecar: SidecarProcess) -> None:
    for payload in (os.urandom(4096) + b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"GET / HTTP/1.1\r\nbad header\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 40):
        with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except ConnectionResetError:
                pass
            assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 505", b"HTTP/1.1 431")), answer
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
        sock.sendall(b"A" * 100_000)  # a head larger than allowed
        assert sock.recv(4096).startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", sidecar.agent_port), timeout=5) as sock:
        sock.sendall(os.urandom(2048))
        assert sock.recv(100).endswith(b"\n")
    assert _timed_health(sidecar) < 1.0
    assert _timed_agent(sidecar) < 1.0


def test_5000_idle_connections_on_each_port_do_not_stop_health_or_the_agent(sidecar: SidecarProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10_500:
        pytest.skip(f"this test needs 10,500 open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for port in (sidecar.http_port, sidecar.agent_port):
            for _ in range(5000):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        health = [_timed_health(sidecar) for _ in range(20)]
        agent = [_timed_agent(sidecar) for _ in range(20)]
        assert max(health) < 1.0, health
        assert max(agent) < 1.0, agent
        # every connection has a time limit: the idle ones are cut off, none is left hanging
        budget = HEADER_TIMEOUT + 5.0 - (time.monotonic() - opened)
        deadline = time.monotonic() + max(budget, 1.0)
        still_open = [sock for sock in idle if not _closed_by_peer(sock, max(deadline - time.monotonic(), 0.01))]
        assert not still_open, f"{len(still_open)} idle connections were never closed"
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _timed_health(sidecar) < 1.0


def test_half_open_clients_are_answered_or_closed_at_once(sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no end of head, then half-close
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        assert _closed_by_peer(sock, 2.0)
        assert time.monotonic() - started < 1.0
    with socket.create_connection(("127.0.0.1", sidecar.agent_port), timeout=5) as sock:
        sock.shutdown(socket.SHUT_WR)  # HAProxy never sends anything: the line still comes
        assert sock.recv(100).startswith((b"up ", b"ready up "))
    with socket.create_connection(("127.0.0.1", sidecar.agent_port), timeout=5) as sock:
        started = time.monotonic()  # a client that neither reads nor closes is cut off
        assert _closed_by_peer(sock, 10.0)
        assert time.monotonic() - started < 5.0


def test_a_slow_client_is_cut_off_while_others_are_served(sidecar: SidecarProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
        started = time.monotonic()
        cut_off = None
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = time.monotonic() - started
                break
            assert _timed_health(sidecar) < 1.0
            time.sleep(0.1)
            if time.monotonic() - started > HEADER_TIMEOUT + 3:
                break
        if cut_off is None:
            assert _closed_by_peer(sock, 3.0)
            cut_off = time.monotonic() - started
        assert cut_off < HEADER_TIMEOUT + 3


def test_pipelined_requests_are_all_answered_in_order(sidecar: SidecarProcess) -> None:
    paths = ["/livez", "/health", "/readyz", "/health/memory", "/nope"] * 20
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
        sock.sendall(b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths))
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    statuses = [int(part.split(b" ", 1)[0]) for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert len(statuses) == len(paths)
    assert statuses[4::5] == [404] * 20 and statuses[0::5] == [200] * 20


def test_oversized_requests_are_refused_before_they_are_read(sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        assert _closed_by_peer(sock, 2.0)
    with socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"j" * 100_000 + b"\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 431")
    assert _timed_health(sidecar) < 1.0


def test_connections_reset_mid_request_or_mid_answer_cost_nothing(sidecar: SidecarProcess) -> None:
    linger_zero = struct.pack("ii", 1, 0)  # close() sends a reset instead of a FIN
    for port, payload in [(sidecar.http_port, b"GET /health HTTP/1.1\r\nHost: x\r\n"),
                          (sidecar.http_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                          (sidecar.agent_port, b"")] * 200:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
        if payload:
            sock.sendall(payload)
        sock.close()
    assert _timed_health(sidecar) < 1.0
    assert _timed_agent(sidecar) < 1.0
    assert "Traceback" not in sidecar.logs()
