"""Real Prometheus 2.42 scraping a real sidecar every second while a real traced app works.

rate() is honest during a job (the naive counter is not), a SIGKILLed app keeps its work, and the last
sample Prometheus holds after the sidecar's SIGTERM is the folded total.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import pytest

from candor_demo.prometheus_process import PrometheusProcess
from candor_tracer.journal.reader import read_totals
from harness.processes.sidecar_process import AppProcess, SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

TRACED = 'job_worked_seconds_total{job="sidecar",task="resize"}'
NAIVE = 'naive_job_seconds_total{job="app",task="resize"}'


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def _values(prom: PrometheusProcess, expr: str, start: float, end: float) -> list[float]:
    result = prom.query_range(expr, start, end, 1.0)
    assert len(result) == 1, f"{expr}: {result}"
    return [float(value) for _, value in result[0]["values"]]


def _raw_samples(prom: PrometheusProcess, seconds: int) -> list[float]:
    result = prom.query(f"{TRACED}[{seconds}s]")
    assert len(result) == 1, result
    return [float(value) for _, value in result[0]["values"]]


def test_prometheus_sees_in_flight_seconds_survives_sigkill_and_gets_the_final_fold(tmp_path: Path) -> None:
    state = tmp_path / "state"
    app = AppProcess(state, "worker").start()
    sidecar = SidecarProcess(state, config={"finalScrapeTimeout": "30s"}).start()
    prom = PrometheusProcess({"sidecar": [f"127.0.0.1:{sidecar.http_port}"], "app": [f"127.0.0.1:{app.port}"]},
                             scrape_interval=1.0)
    try:
        prom.start()
        prom.wait_for_targets_up()

        # 1. A 20 s job: rate() over 5 s stays at 1 busy worker; the naive counter is 0, then a spike.
        t0 = time.time()
        app.get("/job?seconds=20")
        _sleep_until(t0 + 24)
        rates = _values(prom, f"rate({TRACED}[5s])", t0 + 6, t0 + 19)
        assert len(rates) >= 12
        assert all(abs(rate - 1.0) <= 0.05 for rate in rates), rates
        naive_during = _values(prom, NAIVE, t0 + 1, t0 + 19)
        assert naive_during and set(naive_during) == {0.0}, naive_during
        naive_after = _values(prom, NAIVE, t0 + 22.5, t0 + 23.5)
        assert all(19.5 <= value <= 21.0 for value in naive_after), naive_after
        naive_rate = _values(prom, f"rate({NAIVE}[5s])", t0 + 20, t0 + 24)
        assert max(naive_rate) >= 2.5, f"the naive counter should spike: {naive_rate}"

        # 2. SIGKILL the app 8 s into a job: the 8 s are kept, and the series never goes down.
        before = _raw_samples(prom, 3)[-1]
        t1 = time.time()
        app.get("/job?seconds=20")
        _sleep_until(t1 + 8)
        app.signal(signal.SIGKILL)
        app.process.wait()  # type: ignore[union-attr]
        _sleep_until(t1 + 14)
        increase = prom.query_value(f"increase({TRACED}[15s])", at=t1 + 13)
        assert increase is not None and abs(increase - 8.0) <= 1.5, increase
        samples = _raw_samples(prom, 40)
        assert all(b >= a for a, b in itertools.pairwise(samples)), samples
        assert abs(samples[-1] - before - 8.0) <= 1.5, (before, samples)
        assert prom.query_value(f"resets({TRACED}[1m])") == 0

        # 3. A new app process works 3 s and dies; SIGTERM the sidecar: it folds, serves one more scrape, exits 0,
        #    and Prometheus' last sample is the folded total.
        app = AppProcess(state, "worker").start()
        app.get("/job?seconds=30")
        counted = sum(series.value for series in read_totals(state).series if series.labels == (("task", "resize"),))
        wait_until(lambda: sum(series.value for series in read_totals(state).series
                               if series.labels == (("task", "resize"),)) >= counted + 2.5, 15,
                   "2.5 s of the new app's job in the journals")
        app.signal(signal.SIGKILL)
        app.process.wait()  # type: ignore[union-attr]
        terminated = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(30) == 0
        assert time.monotonic() - terminated < 5, "it waits for one scrape, not for finalScrapeTimeout"
        folded = {series.labels: series.value for series in read_totals(state).series}[(("task", "resize"),)]
        # The final scrape was served before the sidecar exited; Prometheus stores it within moments.
        last = wait_until(lambda: prom.query_value(f"last_over_time({TRACED}[1m])") == pytest.approx(folded, rel=1e-9)
                          and prom.query_value(f"last_over_time({TRACED}[1m])"), 10,
                          "Prometheus to hold the final scrape")
        assert last == pytest.approx(folded, rel=1e-9, abs=1e-9), (last, folded)
        assert folded - samples[-1] >= 2.0  # the second app's 3 s are in it
    finally:
        prom.stop()
        sidecar.kill()
        app.kill()
