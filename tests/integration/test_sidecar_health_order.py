"""/health never goes back in time: hammered across many evaluations, no answer is older than one before it."""

from __future__ import annotations

import http.client
import threading
from pathlib import Path

import pytest

from harness.processes.sidecar_process import SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration


def test_health_answers_never_come_from_an_older_evaluation_than_one_already_served(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state", config={"evaluationInterval": "100ms"}) as sidecar:
        lock = threading.Lock()
        newest_served = 0  # the highest evaluation any answer completed with so far
        regressions: list[tuple[int, int]] = []
        seen: set[int] = set()
        stop = threading.Event()

        def hammer(path: str) -> None:
            nonlocal newest_served
            connection = http.client.HTTPConnection("127.0.0.1", sidecar.http_port, timeout=5)
            while not stop.is_set():
                with lock:
                    floor = newest_served  # served before this request was sent
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                evaluation = int(response.getheader("Candor-Evaluation", "0"))
                with lock:
                    if evaluation < floor:
                        regressions.append((floor, evaluation))
                    newest_served = max(newest_served, evaluation)
                    seen.add(evaluation)
            connection.close()

        threads = [threading.Thread(target=hammer, args=(path,))
                   for path in ("/health", "/health", "/health?verbose", "/health/memory")]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(seen) >= 30, 30, "thirty evaluations to be served")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not regressions, regressions[:5]
