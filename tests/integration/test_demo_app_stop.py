"""The demo app stops as web servers do: on SIGTERM it takes no new connection, lets a 3 s request and a 3 s
streamed response in flight finish whole, then exits 0 (the departures benchmark counts on it)."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.processes.ports import free_port
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _answers(port: int) -> bool:
    try:
        return _get(port, "/resize")[0] == 200
    except OSError:
        return False


def test_sigterm_refuses_new_connections_and_finishes_the_requests_in_flight(tmp_path: Path) -> None:
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "candor_demo.resizer_app", "--name=pod-1", "--workers=1",
                            f"--http-port={port}", f"--metrics-port={free_port()}",
                            f"--truth-file={tmp_path / 'truth'}"])
    try:
        wait_until(lambda: _answers(port), 30, "the app answering")
        answers: dict[str, tuple[int, str]] = {}
        threads = [threading.Thread(target=lambda p=path: answers.__setitem__(p, _get(port, p)))
                   for path in ("/slow?seconds=3", "/stream?seconds=3")]
        for thread in threads:
            thread.start()
        wait_until(lambda: {"slow", "stream"} <= set(json.loads(_get(port, "/inflight")[1])), 10,
                   "both long requests in flight")
        app.send_signal(signal.SIGTERM)
        wait_until(lambda: not _answers(port), 5, "new connections refused after SIGTERM")
        assert app.poll() is None  # still finishing what it had
        for thread in threads:
            thread.join(10)
        assert answers["/slow?seconds=3"] == (200, "pod-1\n")
        status, streamed = answers["/stream?seconds=3"]
        assert status == 200 and streamed.splitlines()[-1] == "pod-1 0.0"
        assert app.wait(10) == 0
    finally:
        app.kill()
        app.wait()
