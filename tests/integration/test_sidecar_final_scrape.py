"""The sidecar's hold for a final scrape at SIGTERM, with a real traced app and a real sidecar process.

A sidecar that something scrapes (Prometheus scrapes each target it knows once per interval) serves
`/metrics` after SIGTERM until one scrape after the final fold, which carries the app's last seconds. One
that nothing ever scraped has no scraper coming back: it folds the journals and exits at once, instead of
holding the pod for finalScrapeTimeout on every rollout.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor_tracer.journal.archive import load_archive
from candor_tracer.journal.reader import read_totals
from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

FINAL_SCRAPE_TIMEOUT = 60.0
CONFIG = {"evaluationInterval": "200ms", "finalScrapeTimeout": f"{FINAL_SCRAPE_TIMEOUT:g}s"}
RESIZE = (("task", "resize"),)


def _journaled(state: Path) -> float:
    return sum(series.value for series in read_totals(state).series if series.labels == RESIZE)


def _killed_mid_job(state: Path) -> float:
    """A traced app works a while and is SIGKILLed mid-job (as the kubelet's kill after the grace period
    would): its seconds are in its journal only, for the sidecar to fold. The seconds journaled before."""
    with AppProcess(state, "worker") as app:
        before = _journaled(state)
        app.get("/job?seconds=30")
        wait_until(lambda: _journaled(state) >= before + 1.0, 15, "a second of the job in the journal")
        app.signal(signal.SIGKILL)
        app.process.wait(10)  # type: ignore[union-attr]
    return before


def _scraped_seconds(sidecar: SidecarProcess) -> float:
    status, _, body = sidecar.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "job_worked_seconds_total" and sample.labels == dict(RESIZE):
                return float(sample.value)
    raise AssertionError("no job_worked_seconds_total{task=\"resize\"} in /metrics")


def test_a_sidecar_never_scraped_folds_and_exits_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with SidecarProcess(state, config=CONFIG) as sidecar:
        before = _killed_mid_job(state)
        terminated = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(FINAL_SCRAPE_TIMEOUT) == 0
        took = time.monotonic() - terminated
        assert took < 5, f"exited {took:.1f} s after SIGTERM: nothing scraped it, so no hold for a final scrape"
        assert "/metrics was never scraped, so no final scrape is coming: exiting" in sidecar.logs()
    # The app's seconds were folded all the same, by the sidecar, into the state directory's archive.
    archived = sum(value for (_, labels), value in load_archive(state).totals.items() if labels == RESIZE) / 1e9
    assert archived >= before + 1.0, archived


def test_a_scraped_sidecar_serves_until_one_scrape_after_the_fold_which_carries_the_folded_seconds(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with SidecarProcess(state, config=CONFIG) as sidecar:
        assert sidecar.get("/metrics")[0] == 200  # scraped once, as Prometheus does every interval
        _killed_mid_job(state)
        sidecar.signal(signal.SIGTERM)
        wait_until(lambda: "serving until one /metrics scrape" in sidecar.logs(), 10, "the final fold")
        sidecar.wait_evaluations(3)  # while it holds, it still evaluates and answers
        assert sidecar.process is not None and sidecar.process.poll() is None, "it waits for the final scrape"
        assert sidecar.agent_line().startswith("drain")
        final = _scraped_seconds(sidecar)
        assert sidecar.wait(10) == 0
        assert "final scrape served; exiting" in sidecar.logs()
    folded = {series.labels: series.value for series in read_totals(state).series}[RESIZE]
    assert final == pytest.approx(folded, rel=1e-9), "the final scrape has every second the journals held"
