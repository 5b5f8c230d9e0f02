"""The app process is gone: /health fails and the agent says down, until a new app process journals again.

Real processes on one state directory: a traced app (journal writer) and a sidecar. SIGKILL of the app
releases its journal lock; the sidecar must notice within two evaluation intervals. A restarted app heals
it and its weight ramps over slowStart. SIGTERM of the sidecar still answers drain, whatever else fails.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.processes.sidecar_process import AppProcess, SidecarProcess

pytestmark = pytest.mark.integration

INTERVAL = 0.5
SLOW_START = 4.0
CONFIG = {"evaluationInterval": f"{INTERVAL * 1000:g}ms", "slowStart": f"{SLOW_START:g}s",
          "deadlock": {"heartbeatTimeout": "5s"}, "finalScrapeTimeout": "2s"}


def _until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
    return time.monotonic()


def _heartbeat_check(sidecar: SidecarProcess) -> tuple[int, dict[str, object]]:
    status, _, body = sidecar.get("/health")
    [entry] = json.loads(body)["checks"]["deadlock:heartbeat"]
    return status, entry


def test_a_killed_app_fails_health_at_once_and_a_new_app_heals_it_with_a_ramp(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with AppProcess(state, "first") as app, SidecarProcess(state, config=CONFIG) as sidecar:
        _until("the app's heartbeat passes", lambda: _heartbeat_check(sidecar)[1]["status"] == "pass", 10)
        assert not sidecar.agent_line().startswith("down")

        app.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        down_at = _until("agent says down", lambda: sidecar.agent_line().startswith("down"), 10)
        failed_at = _until("/health 503", lambda: sidecar.get("/health")[0] == 503, 10)
        assert down_at - killed_at <= 2 * INTERVAL, f"agent down {down_at - killed_at:.2f}s after SIGKILL"
        assert failed_at - killed_at <= 2 * INTERVAL, f"/health 503 {failed_at - killed_at:.2f}s after SIGKILL"
        assert sidecar.agent_line() == "down # app exited\n"
        status, entry = _heartbeat_check(sidecar)
        assert status == 503 and entry["status"] == "fail"
        assert str(entry["output"]).startswith("app process exited ") and "no live journal writer" in str(
            entry["output"])
        assert entry["observedUnit"] == "s" and 0 <= float(entry["observedValue"]) <= 10  # type: ignore[arg-type]
        assert sidecar.get("/readyz")[0] == 503

        # The app container restarts: a new writer on the same state directory heals it, then the weight ramps.
        with AppProcess(state, "second"):
            healed_at = _until("agent says up", lambda: " up " in f" {sidecar.agent_line()}", 10)
            assert _heartbeat_check(sidecar)[1]["status"] == "pass" and sidecar.get("/health")[0] == 200
            weights = []
            while time.monotonic() - healed_at < SLOW_START + 1:
                line = sidecar.agent_line()
                assert "down" not in line, line
                weights.append(int(next(word for word in line.split() if word.endswith("%"))[:-1]))
                time.sleep(0.2)
            assert weights == sorted(weights) and weights[0] < 50 and weights[-1] == 100, weights
            assert len(set(weights)) >= 4, f"a ramp, not a step: {weights}"


def test_a_restarted_sidecar_knows_from_the_archive_that_the_app_exited(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with AppProcess(state, "gone") as app:
        with SidecarProcess(state, config=CONFIG) as first:
            _until("the app's heartbeat passes", lambda: _heartbeat_check(first)[1]["status"] == "pass", 10)
        app.signal(signal.SIGKILL)
        app.process.wait()  # type: ignore[union-attr]
    with SidecarProcess(state, config=CONFIG) as second:  # folds the dead journal on its first evaluation
        status, entry = _heartbeat_check(second)
        assert status == 503 and entry["status"] == "fail", entry
        assert "its journal was folded" in str(entry["output"])
        assert second.agent_line() == "down # app exited\n"


def test_a_pod_whose_app_never_journaled_only_warns(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state", config=CONFIG) as sidecar:
        sidecar.wait_evaluations(2)
        status, entry = _heartbeat_check(sidecar)
        assert status == 200 and entry["status"] == "warn"
        assert sidecar.agent_line().startswith("up ")


def test_sigterm_after_the_app_exited_answers_drain_not_down(tmp_path: Path) -> None:
    """In a pod the app exits first, then the native sidecar gets SIGTERM: HAProxy must see drain."""
    state = tmp_path / "state"
    with AppProcess(state, "leaving") as app, SidecarProcess(state, config=CONFIG) as sidecar:
        _until("the app's heartbeat passes", lambda: _heartbeat_check(sidecar)[1]["status"] == "pass", 10)
        app.signal(signal.SIGTERM)
        app.process.wait(10)  # type: ignore[union-attr]
        _until("agent says down", lambda: sidecar.agent_line().startswith("down # app exited"), 10)
        assert sidecar.get("/metrics")[0] == 200  # scraped, as by Prometheus: it holds for a final scrape
        sidecar.signal(signal.SIGTERM)
        _until("agent says drain", lambda: sidecar.agent_line().startswith("drain"), 5)
        sidecar.wait_evaluations(2)  # later evaluations (the app still gone) never turn drain into down
        assert sidecar.agent_line().startswith("drain")
        assert sidecar.wait(10) == 0  # no scrape came after the fold: exits after finalScrapeTimeout
