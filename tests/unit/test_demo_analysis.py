"""How the demo turns raw Prometheus samples and truth intervals into per-scrape busy workers and lost work."""

from __future__ import annotations

from pathlib import Path

import pytest

from candor_demo.analysis import IntervalFigure, LostWork, Series, interval_figures, summed_by_time
from candor_demo.scenario import RunRecord
from candor_demo.settings import QUICK
from candor_demo.truth import BusyInterval

OFFSET = 1_000_000.0  # wall − monotonic in these records


def _record() -> RunRecord:
    record = RunRecord(QUICK, wall_minus_mono=OFFSET, started=0.0, launched=0.0, ended=100.0)
    record.truth_files = {"resizer-1": Path("/dev/null")}
    return record


def test_series_created_late_count_zero_before_their_first_sample() -> None:
    early = Series({"worker": "0"}, [(10.0, 1.0), (12.0, 3.0), (14.0, 5.0)])
    late = Series({"worker": "1"}, [(14.0, 2.0)])
    assert summed_by_time([early, late]) == [(10.0, 1.0), (12.0, 3.0), (14.0, 7.0)]


def test_busy_workers_per_interval_compare_counter_increase_with_truth() -> None:
    record = _record()
    # Two workers busy all the time; the traced counter has every second, the naive one only finished jobs.
    truth = [BusyInterval(0, 1, 0.0, None), BusyInterval(1, 1, 0.0, None)]
    traced = [(OFFSET + t, 2.0 * t) for t in (10.0, 12.0, 14.0, 16.0)]
    naive = [(OFFSET + 10.0, 18.0), (OFFSET + 12.0, 18.0), (OFFSET + 14.0, 30.0), (OFFSET + 16.0, 30.0)]
    rows = interval_figures(record, truth, traced, naive, latency={})
    assert len(rows) == 3 - QUICK.skip_first_scrapes
    for row in rows:
        assert row.truth == pytest.approx(2.0)
        assert row.traced == pytest.approx(2.0)
        assert row.traced_error == pytest.approx(0.0)
    assert [row.naive for row in rows][-2:] == [pytest.approx(6.0), pytest.approx(0.0)]


def test_the_truth_is_a_band_as_wide_as_the_scrapes_durations() -> None:
    record = _record()
    truth = [BusyInterval(0, 1, 0.0, None)]  # one worker busy throughout
    # The sidecar read at 11.15 and 13.0 but Prometheus stamps 11.0 and 13.0 (scrapes 0.2 s long):
    traced = [(OFFSET + 9.0, 0.0), (OFFSET + 11.0, 11.15), (OFFSET + 13.0, 13.0)]
    latency = {OFFSET + 11.0: 0.2, OFFSET + 13.0: 0.2}
    row = interval_figures(record, truth, traced, [], latency)[-1]
    assert row.traced == pytest.approx(1.85 / 2)
    assert row.truth_low == pytest.approx(1.8 / 2)
    assert row.truth_high == pytest.approx(2.2 / 2)
    assert row.traced_error == 0.0  # inside the band: no error claimed
    wrong = IntervalFigure(0.0, 2.0, truth=1.0, traced=0.8, naive=None, truth_low=0.9, truth_high=1.1)
    assert wrong.traced_error == pytest.approx(0.1)


def test_an_idle_instance_is_judged_against_one_worker_not_zero() -> None:
    row = IntervalFigure(0.0, 2.0, truth=0.0, traced=0.01, naive=0.5)
    assert row.traced_error == pytest.approx(0.01)
    assert row.naive_error == pytest.approx(0.5)


def test_lost_work_separates_what_the_signal_cost_from_the_gap_before_it() -> None:
    lost = LostWork("SIGKILL x", truth=30.0, candor=29.9, naive=24.0, in_flight=6.0, candor_gap_before=0.04)
    assert lost.naive_lost == pytest.approx(6.0)
    assert lost.candor_lost == pytest.approx(0.1)
    assert lost.candor_lost_at_signal == pytest.approx(0.06)
    assert LostWork("x", 1.0, None, None, 0.0).candor_lost_at_signal is None


def _starved_record(share_while_starved: int) -> RunRecord:
    """resizer-1 starved from 20 s to 30 s; of every 3 requests per 0.1 s it answers one, except while starved
    (after the agent's settling time) where it answers `share_while_starved` of every 30."""
    from candor_demo.loadgen import RequestResult
    from candor_demo.samplers import CpuSample, ServerSample
    from candor_demo.scenario import StarveRecord

    record = _record()
    record.starve = StarveRecord("resizer-1", start=20.0, end=30.0, cores=0.25)
    for tick in range(100, 400):
        at = tick / 10
        starved = 23.0 <= at < 30.0
        mine = (tick % 30) < share_while_starved if starved else tick % 3 == 0
        for server in ("resizer-1" if mine else "resizer-2", "resizer-3"):
            record.requests.append(RequestResult(at, 200, server, 0.02))
        record.haproxy_samples.append(ServerSample(at, "resizer-1", "UP", 10 if starved else 100, ""))
        record.cpu_samples.append(CpuSample(at, "resizer-1", at * (0.25 if 20.0 <= at < 30.0 else 0.05)))
    return record


def test_the_starved_instance_s_share_is_compared_before_while_and_after() -> None:
    from candor_demo.analysis import starve_check, starve_figures

    figures = starve_figures(_starved_record(share_while_starved=2))
    assert figures is not None
    # Windows: 5 s before; from three agent intervals (1 s) after each change to the next one.
    assert figures.windows == {"before": (15.0, 20.0), "starved": (23.0, 30.0), "after": (33.0, 41.0)}
    assert figures.share["before"] == pytest.approx(1 / 6, abs=0.01)
    assert figures.share["starved"] == pytest.approx(1 / 30, abs=0.01)
    assert figures.cpu_cores["starved"] == pytest.approx(0.25, abs=0.01)
    assert figures.lowest_weight == 10
    assert starve_check(figures).passed

    kept = starve_figures(_starved_record(share_while_starved=15))
    assert kept is not None and not starve_check(kept).passed
