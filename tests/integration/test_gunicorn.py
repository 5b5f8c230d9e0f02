"""Real gunicorn sync workers serving a WSGI app traced by candor_tracer.wsgi, with candor_tracer.gunicorn's hooks.

Workers are recycled by `max_requests` and killed by `timeout` (SIGABRT, then SIGKILL for a worker that does
not react); a real sidecar's /metrics is checked against the requests' own measured time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.apps.framework_runs import (
    Run,
    assert_counted,
    children_of,
    declared_capacities,
    framework_process,
    journal_pids,
)
from harness.apps.pending_requests import request_later
from harness.processes.ports import free_port
from harness.processes.sidecar_process import SidecarProcess
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5

def _sidecar_totals(sidecar: SidecarProcess) -> dict[str, float]:
    status, _, body = sidecar.get("/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "request_worked_seconds_total":
                out[sample.labels["route"]] = sample.value
    return out


def test_max_requests_recycling_and_timeout_kills_seen_by_a_real_sidecar(tmp_path: Path, run: Run) -> None:
    port = free_port()
    argv = ["gunicorn", "-c", "harness/apps/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}",
            "harness.apps.wsgi_app:application"]
    sidecar_readings: list[dict[str, float]] = []
    with SidecarProcess(run.state_dir) as sidecar, \
            framework_process(argv, run.state_dir, tmp_path / "gunicorn.log", HEARTBEAT, {}) as arbiter:
        def two_journaling_workers() -> bool:
            workers = children_of(arbiter.pid)
            return len(workers) == 2 and set(workers) | {arbiter.pid} <= journal_pids(run.state_dir)

        wait_until(two_journaling_workers, timeout=60, what="the arbiter and two idle workers with journals")
        first_workers = set(children_of(arbiter.pid))
        # Each sync worker serves one request at a time and says so, for the load weights; the arbiter none.
        wait_until(lambda: all(declared_capacities(run.state_dir).get(pid) == 1 for pid in first_workers),
                   timeout=30, what="each sync worker declaring a capacity of 1")
        assert declared_capacities(run.state_dir).get(arbiter.pid) is None

        quick = [request_later(port, "quick", 0.5) for _ in range(6)]
        assert [future.result(timeout=60) for _, future in quick] == [200] * 6
        for request_id, _ in quick:
            wait_until(lambda request_id=request_id: run.ended(request_id), timeout=30, what=request_id)
        wait_until(lambda: two_journaling_workers() and not set(children_of(arbiter.pid)) & first_workers,
                   timeout=60, what="max_requests to replace both workers, the new ones journaling")
        sidecar_readings.append(_sidecar_totals(sidecar))

        timed_out, timed_out_done = request_later(port, "timeout", 30)  # SIGABRT: SystemExit inside the request
        stuck, stuck_done = request_later(port, "stuck", 30)  # SIGABRT blocked: the arbiter SIGKILLs the worker
        for request_id in (timed_out, stuck):
            wait_until(lambda request_id=request_id: run.dead(request_id), timeout=60,
                       what=f"gunicorn's timeout to kill the worker serving {request_id}")
            sidecar_readings.append(_sidecar_totals(sidecar))
        # the aborted worker may still answer 500 on its way out; the SIGKILLed one answers nothing
        assert timed_out_done.result(timeout=30) in (None, 500) and stuck_done.result(timeout=30) is None
        wait_until(two_journaling_workers, timeout=60, what="two workers again")
        run.poll()
        final = wait_until(lambda: (t := _sidecar_totals(sidecar)) and len(t) == 3 and t, timeout=30,
                           what="the sidecar's /metrics with all three routes")
        sidecar_readings.append(final)

    assert run.jobs[timed_out].end is not None  # the SIGABRT unwound the request: its trace ended with it
    assert run.jobs[stuck].end is None
    for route, kills in (("/quick", 0), ("/timeout", 0), ("/stuck", 1)):
        worked, killed, counted_kills = run.measured(route)
        assert counted_kills == kills, route
        counted = final[route]
        assert_counted(counted, worked, killed, kills, jobs=6 if route == "/quick" else 1, heartbeat=HEARTBEAT)
    for before, after in itertools.pairwise(sidecar_readings):
        assert all(after.get(route, 0.0) >= value for route, value in before.items()), (before, after)
    run.assert_never_decreasing()
