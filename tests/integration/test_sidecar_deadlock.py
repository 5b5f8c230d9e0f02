"""Deadlock and memory checks against real processes: a blocked asyncio loop, and pod memory limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.processes.sidecar_process import ROOT, SidecarProcess

pytestmark = pytest.mark.integration

BLOCKING_APP = """
import asyncio, time
from prometheus_client import Counter
from candor_tracer import trace, watch_event_loop

JOBS = Counter("job_worked_seconds_total", "Seconds spent working on jobs")

async def main():
    async with trace(JOBS):  # the app's first traced job opens its journal
        await asyncio.sleep(0.01)
    watch_event_loop(threshold=0.3)
    await asyncio.sleep(1.5)
    time.sleep(3.0)  # the bug: a blocking call on the event loop
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _check(sidecar: SidecarProcess, name: str) -> tuple[str, dict[str, object]]:
    status, _, body = sidecar.get(f"/health/{name}")
    if status == 404:  # the check exists once there is something to check (a watched loop's first stall)
        return "absent", {}
    document = json.loads(body)
    return document["status"], document


def _wait_for(sidecar: SidecarProcess, name: str, wanted: str, timeout: float) -> float:
    started = time.monotonic()
    while _check(sidecar, name)[0] != wanted:
        assert time.monotonic() - started < timeout, f"{name} never became {wanted}: {_check(sidecar, name)}"
        time.sleep(0.05)
    return time.monotonic()


def test_a_blocked_event_loop_fails_the_deadlock_check_then_recovers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with SidecarProcess(state, config={"deadlock": {"heartbeatTimeout": "2s"}, "evaluationInterval": "200ms",
                                       "slowStart": "0s"}) as sidecar:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CANDOR_STATE_DIR": str(state)}
        app = subprocess.Popen([sys.executable, "-c", BLOCKING_APP], env=env)
        try:
            failed_at = _wait_for(sidecar, "deadlock:eventLoop", "fail", 15)
            assert "event loop stalled" in sidecar.agent_line()
            assert sidecar.get("/health")[0] == 503
            # the heartbeat thread kept beating: only the loop watchdog could see this
            assert _check(sidecar, "deadlock:heartbeat")[0] == "pass"
            passed_at = _wait_for(sidecar, "deadlock:eventLoop", "pass", 12)
            assert passed_at - failed_at >= 2.0  # a recent stall keeps counting for heartbeatTimeout
        finally:
            app.kill()
            app.wait()


@pytest.mark.parametrize(("limit", "status"), [("1Mi", "fail"), ("1000Ti", "pass")])
def test_memory_of_visible_processes_against_the_app_limit(tmp_path: Path, limit: str, status: str) -> None:
    """No journal carries memory figures here, so the processes the sidecar can see count against the limit."""
    with SidecarProcess(tmp_path / "state", env={"CANDOR_APP_MEMORY_LIMIT": limit}) as sidecar:
        result, document = _check(sidecar, "memory")
        [entry] = document["checks"]["memory:utilization"]  # type: ignore[index]
        assert result == status, document
        assert entry["observedUnit"] == "percent"
        if status == "fail":
            assert sidecar.agent_line().startswith("down # memory ")
