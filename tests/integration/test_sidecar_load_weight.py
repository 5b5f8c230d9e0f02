"""Load weights end to end: a real sidecar reading a real traced app's journal answers a lowered weight while
every worker the app declared is busy, says why (agent `#`, /health?verbose, /metrics), and full weight once
the app is idle again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

CONFIG = {
    "slowStart": "0s",  # no ramp: the weight is the load factor alone
    "evaluationInterval": "200ms",
    "drain": {"agentInterval": "500ms"},  # the smoothing's time constant: one agent interval
    "loadWeight": {"from": ["occupancy"], "targetPercent": 70, "minPercent": 10},
}


def test_all_workers_busy_lowers_the_weight_and_idle_restores_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with AppProcess(state, capacity=2) as app, SidecarProcess(state, config=CONFIG) as sidecar:
        wait_until(lambda: sidecar.agent_line().startswith("up 100%"), 20, "full weight while the app is idle",
                   hint=sidecar.logs())
        status, _, body = sidecar.get("/health?verbose")
        assert status == 200
        (weight,) = json.loads(body)["checks"]["agent:weight"]
        assert weight["observedValue"] == 100 and "full weight" in weight["output"]

        for _ in range(2):  # both declared workers busy for a while
            assert app.get("/job?seconds=12")[0] == 202
        lowered = wait_until(lambda: (line := sidecar.agent_line()).startswith("up 10%") and line, 10,
                             "the weight to fall to minPercent with every worker busy", hint=sidecar.logs())
        assert lowered.strip() == "up 10% # occupancy saturated"
        status, _, body = sidecar.get("/health?verbose")
        document = json.loads(body)
        assert status == 200 and document["status"] in ("pass", "warn")  # busy is not sick
        (weight,) = document["checks"]["agent:weight"]
        assert weight["observedValue"] == 10 and "2.0 of 2 workers busy" in weight["output"]
        metrics = sidecar.get("/metrics")[2].decode()
        assert 'candor_agent_weight_percent{reason="occupancy"} 10' in metrics
        assert 'candor_load_percent{figure="occupancy"}' in metrics
        # At a steady load the weight holds: ten more evaluations, no change.
        changes = _changes(sidecar)
        sidecar.wait_evaluations(10)
        assert _changes(sidecar) == changes and sidecar.agent_line().startswith("up 10%")

        wait_until(lambda: sidecar.agent_line().strip() == "up 100%", 30,
                   "full weight again once the jobs are done", hint=sidecar.logs())
        metrics = sidecar.get("/metrics")[2].decode()
        assert 'candor_agent_weight_percent{reason="full"} 100' in metrics
        settled = _changes(sidecar)
        sidecar.wait_evaluations(10)
        assert _changes(sidecar) == settled and sidecar.agent_line().strip() == "up 100%"


def _changes(sidecar: SidecarProcess) -> float:
    """candor_load_weight_changes_total: how often HAProxy could have been told a new weight."""
    for line in sidecar.get("/metrics")[2].decode().splitlines():
        if line.startswith("candor_load_weight_changes_total "):
            return float(line.split()[1])
    raise AssertionError("no candor_load_weight_changes_total in /metrics")


def test_without_load_weights_busy_workers_keep_full_weight(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = {key: value for key, value in CONFIG.items() if key != "loadWeight"}
    with AppProcess(state, capacity=1) as app, SidecarProcess(state, config=config) as sidecar:
        assert app.get("/job?seconds=5")[0] == 202
        wait_until(lambda: b"candor_inflight_traces 1" in sidecar.get("/metrics")[2], 10,
                   "the sidecar to see the busy worker")
        assert b'"agent:weight"' not in sidecar.get("/health?verbose")[2]
        assert sidecar.agent_line().strip() == "up 100%"
