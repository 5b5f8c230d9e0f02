"""A real uvicorn serving an ASGI app traced by candor_tracer.asgi, its event loop watched (the asyncio pattern).

Concurrent requests on one event loop are each counted; a handler that blocks the loop shows as a stall in
the journal; a SIGKILLed server loses at most one heartbeat of the request it was serving.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from candor_tracer.journal.reader import read_totals
from harness.apps.framework_runs import Run, assert_counted, framework_process, journal_pids, total
from harness.apps.pending_requests import request_later
from harness.processes.ports import free_port, listening
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5

def test_concurrent_requests_a_blocked_loop_and_a_killed_server(tmp_path: Path, run: Run) -> None:
    port = free_port()
    argv = ["uvicorn", "harness.apps.asgi_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--lifespan", "on", "--log-level", "warning"]
    with framework_process(argv, run.state_dir, tmp_path / "uvicorn.log", HEARTBEAT, {}) as server:
        wait_until(lambda: server.pid in journal_pids(run.state_dir), timeout=60,
                   what="the server's journal (opened at lifespan startup)")
        # uvicorn runs the lifespan startup before it binds its port
        wait_until(lambda: listening(port), timeout=30, what=f"uvicorn listening on {port}")
        overlapping = [request_later(port, "sleep", 0.5) for _ in range(3)]
        assert [future.result(timeout=60) for _, future in overlapping] == [200] * 3
        for request_id, _ in overlapping:
            wait_until(lambda request_id=request_id: run.ended(request_id), timeout=30, what=request_id)
        jobs = [run.jobs[request_id] for request_id, _ in overlapping]
        assert max(job.start for job in jobs) < min(job.end or 0.0 for job in jobs)  # all three at once

        _, done = request_later(port, "block", 0.8)
        assert done.result(timeout=60) == 200
        writer = next(w for w in read_totals(run.state_dir).writers if w.pid == server.pid)
        assert writer.last_stall_seconds is not None and writer.last_stall_seconds >= 0.5  # the loop stood still

        lost, _ = request_later(port, "sleep", 30)
        job = wait_until(lambda: run.started(lost), timeout=30, what="the request the kill interrupts")
        wait_until(lambda: time.monotonic() >= job.start + 1.0, timeout=30, what="1 s of it")
        os.kill(server.pid, signal.SIGKILL)
        wait_until(lambda: run.dead(lost), timeout=30, what="the server to die")

    run.poll()
    worked, killed, kills = run.measured("/sleep")
    assert kills == 1
    assert_counted(total(run.state_dir, "request_worked_seconds", route="/sleep"), worked, killed, kills, jobs=4,
                   heartbeat=HEARTBEAT)
    worked, killed, kills = run.measured("/block")
    assert_counted(total(run.state_dir, "request_worked_seconds", route="/block"), worked, killed, kills, jobs=1,
                   heartbeat=HEARTBEAT)
    run.assert_never_decreasing()
