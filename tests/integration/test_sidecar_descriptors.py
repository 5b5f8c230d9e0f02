"""Out of file descriptors: slow clients never make a live app look exited, and /health comes back."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration


def _evaluation(sidecar: SidecarProcess) -> int:
    status, headers, _ = sidecar.get("/health", timeout=5)
    assert status in (200, 503)
    return int(headers["candor-evaluation"])


def _counter(sidecar: SidecarProcess, name: str) -> float:
    _, _, body = sidecar.get("/metrics", timeout=5)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name}")


def test_under_ulimit_256_three_hundred_slow_clients_never_read_as_app_exited(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with AppProcess(state, "web"), \
            SidecarProcess(state, config={"evaluationInterval": "100ms", "slowStart": "0s"}, open_files=256) as sidecar:
        wait_until(lambda: sidecar.agent_line().startswith("up "), 10, "the agent to see the app")
        before = _evaluation(sidecar)
        flood = []
        try:
            for _ in range(300):  # slowloris: connect, send half a head, never finish
                sock = socket.create_connection(("127.0.0.1", sidecar.http_port), timeout=5)
                with contextlib.suppress(OSError):  # evicted at once to make room for a newer one
                    sock.sendall(b"GET /health HTTP/1.1\r\n")
                flood.append(sock)
            wait_until(lambda: _counter(sidecar, "candor_connections_evicted_total") > 0, 15,
                       "the flood to fill the connection budget")
            # A full budget makes room from its oldest idle connections: /health still answers mid-flood.
            assert _evaluation(sidecar) >= before
            # Exposure, not synchronisation: ten evaluations under the flood, each listing the state
            # directory with the descriptors the budget leaves free.
            time.sleep(1.0)
        finally:
            for sock in flood:
                sock.close()
        after = wait_until(lambda: _evaluation(sidecar), 10, "/health to answer again")
        assert after > before + 5  # evaluated throughout
        assert sidecar.agent_line().startswith("up ")  # never `down # app exited`
        assert "app exited" not in sidecar.logs()
        livez = sidecar.get("/livez")
        assert livez[0] == 200, (livez, sidecar.logs()[-3000:])
        assert _counter(sidecar, "candor_connections_evicted_total") > 0
