"""A real sidecar process: /health in draft-inadarei form, /livez, /readyz, /metrics negotiation, termination."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from harness.processes.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration

STATUSES = {"pass", "warn", "fail"}


def _disk_usage(path: Path) -> float:
    stat = os.statvfs(path)
    used = stat.f_blocks - stat.f_bfree
    return 100.0 * used / (used + stat.f_bavail)


def _assert_draft_document(document: dict[str, object]) -> None:
    """The fields draft-inadarei-api-health-check defines, with the types it requires."""
    assert document["status"] in STATUSES
    checks = document["checks"]
    assert isinstance(checks, dict) and checks
    for key, entries in checks.items():
        assert re.fullmatch(r"[a-z]+:[A-Za-z]+", key), key  # "{componentName}:{measurementName}"
        assert isinstance(entries, list) and entries
        for entry in entries:
            assert entry["status"] in STATUSES
            datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))  # RFC 3339
            assert ("observedValue" in entry) == ("observedUnit" in entry)
            if entry["status"] != "pass":
                assert isinstance(entry["output"], str) and entry["output"]


def test_health_document_fields_and_status_codes(tmp_path: Path) -> None:
    usage = _disk_usage(tmp_path)
    healthy = SidecarProcess(tmp_path / "a", config={"disk": {"paths": [str(tmp_path)], "maxPercent": 100}})
    failing = SidecarProcess(tmp_path / "b", config={"disk": {"paths": [str(tmp_path)],
                                                               "maxPercent": max(usage / 2, 0.01)}})
    with healthy, failing:
        status, headers, body = healthy.get("/health")
        document = json.loads(body)
        assert headers["content-type"] == "application/health+json"
        _assert_draft_document(document)
        # no app and no memory limit here: warn (never an invented pass), and warn is still HTTP 200
        assert status == 200 and document["status"] == "warn"
        assert document["checks"]["deadlock:heartbeat"][0]["status"] == "warn"
        [disk] = document["checks"]["disk:utilization"]
        assert disk["status"] == "pass" and disk["componentId"] == str(tmp_path)
        assert disk["observedUnit"] == "percent" and abs(disk["observedValue"] - usage) < 2
        assert "output" not in disk  # the draft: omitted for pass

        status, _, body = failing.get("/health")
        document = json.loads(body)
        _assert_draft_document(document)
        assert status == 503 and document["status"] == "fail"
        assert document["checks"]["disk:utilization"][0]["status"] == "fail"
        assert failing.get("/readyz")[0] == 503
        assert failing.get("/livez")[0] == 200  # the sidecar itself is fine
        assert failing.agent_line().startswith(f"down # disk {tmp_path} ")

        status, _, body = failing.get("/health/disk")
        assert status == 503 and list(json.loads(body)["checks"]) == ["disk:utilization"]
        status, _, body = failing.get("/health/deadlock:heartbeat")
        assert status == 200 and list(json.loads(body)["checks"]) == ["deadlock:heartbeat"]
        status, _, body = failing.get("/health/nonsense")
        assert status == 404 and b"known:" in body
        verbose = json.loads(healthy.get("/health?verbose")[2])
        assert "output" in verbose["checks"]["disk:utilization"][0]


def test_metrics_negotiates_prometheus_text_and_openmetrics(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state") as sidecar:
        status, headers, body = sidecar.get("/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b"candor_inflight_traces 0.0" in body and not body.endswith(b"# EOF\n")
        status, headers, body = sidecar.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert b'candor_check_status{check="deadlock:heartbeat",component="",status="warn"} 1.0' in body


def test_sigterm_drains_waits_for_one_scrape_then_exits_0(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state", config={"finalScrapeTimeout": "30s"}) as sidecar:
        assert sidecar.agent_line().startswith("up ")
        assert sidecar.get("/metrics")[0] == 200  # scraped once, as by Prometheus: a final scrape will come
        sidecar.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not sidecar.agent_line().startswith("drain"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sidecar.get("/readyz")[0] == 503
        sidecar.wait_evaluations(2)
        assert sidecar.process is not None and sidecar.process.poll() is None  # still serving, waiting for a scrape
        assert sidecar.get("/metrics")[0] == 200
        scraped = time.monotonic()
        assert sidecar.wait(10) == 0
        assert time.monotonic() - scraped < 5
        assert "final scrape served" in sidecar.logs()
    # A sidecar restarted in the same pod (same control volume) lifts the DRAIN its predecessor left in HAProxy.
    with SidecarProcess(tmp_path / "state", control_dir=sidecar.control_dir) as successor:
        assert successor.agent_line().startswith("ready up ")


def test_scraped_before_but_not_after_sigterm_it_exits_after_final_scrape_timeout(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state", config={"finalScrapeTimeout": "2s"}) as sidecar:
        assert sidecar.get("/metrics")[0] == 200
        started = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(20) == 0
        assert 1.5 < time.monotonic() - started < 10


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state", config={"finalScrapeTimeout": "60s"}) as sidecar:
        assert sidecar.get("/metrics")[0] == 200  # so the first SIGTERM holds for a final scrape
        sidecar.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not sidecar.agent_line().startswith("drain"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(10) == 143
        assert time.monotonic() - started < 3
