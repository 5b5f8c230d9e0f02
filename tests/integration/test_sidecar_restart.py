"""A SIGKILLed sidecar loses nothing: a new one serves the same totals, still climbing, never lower."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration


def _job_seconds(sidecar: SidecarProcess) -> float:
    status, _, body = sidecar.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "job_worked_seconds":
            return sum(sample.value for sample in family.samples if sample.name == "job_worked_seconds_total")
    return 0.0


def _agent_port_closes(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"agent port {port} still answers after the sidecar was SIGKILLed"
        time.sleep(0.05)


def _gauge(sidecar: SidecarProcess, name: str) -> float | None:
    for family in text_string_to_metric_families(sidecar.get("/metrics")[2].decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def test_counters_survive_a_sidecar_sigkill_and_an_app_exit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with AppProcess(state, "worker") as app:
        first = SidecarProcess(state).start()
        app.get("/job?seconds=30")
        before = wait_until(lambda: _job_seconds(first) >= 1.5 and _job_seconds(first), 10, "1.5 s of the job counted")
        first.signal(signal.SIGKILL)
        first.wait(10)
        _agent_port_closes(first.agent_port)  # nothing left holding the port for the next sidecar
        second = SidecarProcess(state).start()
        try:
            after = _job_seconds(second)
            assert after >= before  # the job is still in flight: counted from its start, not from the restart
            wait_until(lambda: _job_seconds(second) >= after + 0.8, 10, "the new sidecar's count to climb")
            climbing = _job_seconds(second)
            app.kill()  # the app dies mid-job: its journal is folded into the archive
            wait_until(lambda: _gauge(second, "candor_app_processes") == 0
                       and _gauge(second, "candor_last_fold_timestamp_seconds") is not None, 10,
                       "the dead app's journal folded into the archive")
            folded = _job_seconds(second)
            assert folded >= climbing
            # Two more evaluations after the fold, seen by the sidecar's own clock: nobody works any more,
            # so the total stays flat, never lower.
            fold_seen = _gauge(second, "candor_last_evaluation_timestamp_seconds") or 0.0
            wait_until(lambda: (_gauge(second, "candor_last_evaluation_timestamp_seconds") or 0.0) >= fold_seen + 2, 10,
                       "two evaluations after the fold")
            assert _job_seconds(second) == folded
        finally:
            second.kill()


def _agent_answers(sidecar: SidecarProcess) -> float:
    _, _, body = sidecar.get("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "candor_agent_answers_total":
                return sample.value
    raise AssertionError("no candor_agent_answers_total")
