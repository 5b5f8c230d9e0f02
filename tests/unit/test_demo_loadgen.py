"""The demo's load generator against a real server that closes connections the way HAProxy may."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from candor_demo.loadgen import LoadGenerator

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nresizer-2\n"


def _read_request(connection: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


@contextmanager
def _server(answers_per_connection: int) -> Iterator[int]:
    """Answers that many requests on each connection, then closes it on the next one without an answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            for _ in range(answers_per_connection):
                if not _read_request(connection):
                    return
                connection.sendall(ANSWER)
            _read_request(connection)

    def accept() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        listener.close()
        thread.join(5)


def _run(port: int, count: int) -> LoadGenerator:
    load = LoadGenerator(port, rate=100.0, clients=1, path="/resize")
    load.start()
    deadline = time.monotonic() + 10
    while len(load.snapshot()) < count:
        assert time.monotonic() < deadline, load.snapshot()
        time.sleep(0.01)
    load.stop()
    return load


def test_a_kept_alive_connection_closed_unanswered_is_retried_once_on_a_new_one() -> None:
    with _server(answers_per_connection=1) as port:
        results = _run(port, 6).snapshot()
    assert all(r.status == 200 and r.server == "resizer-2" for r in results), results
    assert [r.retried for r in results[:4]] == [False, True, True, True]


def test_a_new_connection_closed_unanswered_is_a_failure_with_its_cause() -> None:
    with _server(answers_per_connection=0) as port:
        results = _run(port, 3).snapshot()
    assert all(r.status == 0 and not r.retried for r in results), results
    assert results[0].error.startswith("RemoteDisconnected"), results[0]
