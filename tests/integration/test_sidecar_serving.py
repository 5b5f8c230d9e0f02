"""A real sidecar told the app's serving ports (`--app-port`, as the injection passes them): the pod's
readiness (`/health/app`), `/readyz`, `/health` and the agent follow whether the app accepts connections."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from harness.processes.ports import free_port
from harness.processes.sidecar_process import SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration


def test_not_ready_until_the_app_listens_and_again_when_it_stops(tmp_path: Path) -> None:
    port = free_port()
    with SidecarProcess(tmp_path / "state", args=["--app-port", str(port)]) as sidecar:
        # The app has not bound its port yet: the readiness path fails, and so do /readyz and the agent.
        status, _, body = sidecar.get("/health/app")
        assert status == 503
        [entry] = json.loads(body)["checks"]["app:serving"]
        assert entry["status"] == "fail" and entry["componentId"] == str(port)
        assert sidecar.get("/readyz")[0] == 503
        assert f"app port {port} refuses connections" in sidecar.get("/readyz")[2].decode()
        assert sidecar.agent_line().startswith(f"down # app port {port} refuses connections")

        with socket.create_server(("127.0.0.1", port)):
            wait_until(lambda: sidecar.get("/health/app")[0] == 200, 10, "/health/app to pass once the app listens")
            assert sidecar.agent_line().startswith("up ")
        # The app stopped listening (it exited, or restarts): out of rotation again.
        wait_until(lambda: sidecar.get("/health/app")[0] == 503, 10, "/health/app to fail once the app stopped")
