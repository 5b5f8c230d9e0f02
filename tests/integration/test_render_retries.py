"""What the rendered backend lets a real HAProxy retry when a pod closes a connection without answering.

A pod leaving (or dying under a request) closes server connections it had accepted: HAProxy then has
sent a request and got nothing back. The rendered `retry-on conn-failure empty-response` with
`option redispatch 1` sends an idempotent request to another pod, so its client never sees the close;
a POST may have reached the app, so it is never sent twice: its client gets HAProxy's 502.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from candor_demo.haproxy_process import HAProxyProcess
from candor_operator.policy import parse_policy
from candor_operator.render import Server, render_backend
from harness.processes.ports import free_port
from tests.cases.policy_cases import valid_spec

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


class Pod:
    """A TCP server on 127.0.0.1 answering `/health` with 200 and every other request per `closes`:
    with `closes`, it reads the request and closes the connection with no answer (a pod leaving)."""

    def __init__(self, name: str, closes: bool) -> None:
        self.name, self.closes = name, closes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[str] = []  # request lines of non-check requests, as received
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            if " /health " in line:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                return
            with self.lock:
                self.requests.append(line)
            if not self.closes:
                body = self.name.encode()
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                   % (len(body), body))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(params=["haproxytech", "haproxy-ingress"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[int, Pod, Pod]]:
    """HAProxy's frontend port, and the two pods behind the rendered backend."""
    leaving, staying = Pod("leaving", closes=True), Pod("staying", closes=False)
    # The agent port: bound but not listening, so HAProxy's agent checks are refused (not an error for it).
    no_agent = socket.socket()
    no_agent.bind(("127.0.0.1", 0))
    policy = parse_policy(valid_spec(httpCheck={"interval": "500ms", "rise": 1, "fall": 1}))
    servers = [Server(pod.name, f"127.0.0.1:{pod.port}", check_port=pod.port,
                      agent_port=no_agent.getsockname()[1]) for pod in (leaving, staying)]
    section = render_backend(policy, servers, name="candor", controller=request.param)
    port = free_port()
    config = GLOBAL + f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend candor\n" + section
    try:
        with HAProxyProcess(config) as haproxy:
            for pod in (leaving, staying):
                haproxy.wait_for_status("candor", pod.name, "UP", timeout=10)
            yield port, leaving, staying
    finally:
        leaving.close()
        staying.close()
        no_agent.close()


def _send(port: int, method: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = b"x=1" if method == "POST" else None
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_an_idempotent_request_closed_unanswered_is_retried_on_another_pod(
        backend: tuple[int, Pod, Pod]) -> None:
    port, leaving, staying = backend
    answers = [_send(port, "GET", f"/get/{n}") for n in range(20)]
    assert answers == [(200, "staying")] * 20
    # The leaving pod really got (and closed) some of them: they were retried, not routed around.
    got = [line for line in leaving.requests if line.startswith("GET /get/")]
    assert got, "no GET reached the pod that closes connections: the retry was not exercised"
    assert len(staying.requests) == 20


def test_a_post_closed_unanswered_is_not_sent_twice(backend: tuple[int, Pod, Pod]) -> None:
    port, leaving, staying = backend
    statuses = [_send(port, "POST", f"/post/{n}")[0] for n in range(20)]
    posted_to_leaving = [line for line in leaving.requests if line.startswith("POST ")]
    posted_to_staying = [line for line in staying.requests if line.startswith("POST ")]
    assert posted_to_leaving, "no POST reached the pod that closes connections"
    # Each POST reached exactly one pod once; those the leaving pod closed failed instead of being repeated.
    assert len(posted_to_leaving) + len(posted_to_staying) == 20
    assert statuses.count(502) == len(posted_to_leaving)
    assert statuses.count(200) == len(posted_to_staying)
