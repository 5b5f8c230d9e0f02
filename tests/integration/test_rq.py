"""Real RQ workers on a real Redis, traced by a worker class made with one line (candor_tracer.rq).

Jobs are stopped the ways RQ stops them: `job_timeout` (JobTimeoutException raised inside the work-horse),
a stop-job command (the worker SIGKILLs the horse) and a worker SIGKILLed whole. A horse per job means a
journal per job; a restarted worker in a fresh PID namespace, like a restarted container, reuses the PIDs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.command import send_stop_job_command

from harness.apps.framework_runs import (
    Run,
    assert_counted,
    declared_capacities,
    framework_process,
    journal_pids,
    total,
)
from harness.processes.pid_namespace import PREFIX, needs_pid_namespace
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5


def _worker(run: Run, broker: str, tmp_path: Path, worker_class: str, prefix: list[str] | None = None) -> object:
    argv = ["rq.cli", "worker", "--url", broker, "--worker-class", f"harness.apps.rq_app.{worker_class}",
            "--logging_level", "WARNING", "--disable-job-desc-logging", "default"]
    return framework_process(argv, run.state_dir, tmp_path / f"{worker_class}.log", HEARTBEAT,
                             {"CANDOR_TEST_REDIS": broker}, prefix=prefix)


def _enqueue(broker: str, seconds: float, timeout: int | None = None) -> str:
    with redis.Redis.from_url(broker) as connection:
        job = Queue("default", connection=connection).enqueue("harness.apps.rq_app.work", seconds, job_timeout=timeout)
        return str(job.id)


WORK = "harness.apps.rq_app.work"


def _counted(run: Run) -> float:
    return total(run.state_dir, "job_worked_seconds", job=WORK, queue="default")


def test_work_horses_timed_out_and_killed_lose_at_most_one_heartbeat(tmp_path: Path, broker: str, run: Run) -> None:
    with _worker(run, broker, tmp_path, "MeasuredWorker") as worker:
        quick = [_enqueue(broker, 0.5) for _ in range(3)]
        timed_out = _enqueue(broker, 30, timeout=1)  # RQ raises JobTimeoutException inside the horse after 1 s
        for job_id in [*quick, timed_out]:
            wait_until(lambda job_id=job_id: run.ended(job_id), timeout=60, what=f"job {job_id}")
        pids = {run.jobs[job_id].pid for job_id in [*quick, timed_out]}
        assert len(pids) == 4 and worker.pid not in pids  # a work-horse per job
        timed = run.jobs[timed_out]
        assert timed.end is not None and 0.9 <= timed.end - timed.start < 2  # the 1 s alarm is set before it starts
        assert worker.pid in journal_pids(run.state_dir)  # the idle worker is seen alive between jobs
        assert declared_capacities(run.state_dir).get(worker.pid) == 1  # one job at a time (load weights)

        stopped = _enqueue(broker, 30)
        job = wait_until(lambda: run.started(stopped), timeout=60, what="the job the test stops")
        wait_until(lambda: time.monotonic() >= job.start + 1.0, timeout=30, what="1 s of the stopped job")
        with redis.Redis.from_url(broker) as connection:
            send_stop_job_command(connection, stopped)  # the worker SIGKILLs the horse's process group
        wait_until(lambda: run.dead(stopped), timeout=30, what="the stopped job's horse to die")

        lost = _enqueue(broker, 30)
        job = wait_until(lambda: run.started(lost), timeout=60, what="the job that dies with its worker")
        wait_until(lambda: time.monotonic() >= job.start + 1.0, timeout=30, what="1 s of the last job")
        # the worker and its horse (a process group of its own), as a node kills a container's processes
        os.killpg(worker.pid, signal.SIGKILL)
        os.kill(job.pid, signal.SIGKILL)
        wait_until(lambda: run.dead(lost), timeout=30, what=f"horse {job.pid} to die")

    run.poll()
    worked, killed, kills = run.measured(WORK)
    assert kills == 2
    counted = _counted(run)
    assert_counted(counted, worked, killed, kills, jobs=6, heartbeat=HEARTBEAT)
    run.assert_never_decreasing()


def test_simple_worker_counts_a_timed_out_job_in_full(tmp_path: Path, broker: str, run: Run) -> None:
    with _worker(run, broker, tmp_path, "MeasuredSimpleWorker") as worker:
        jobs = [_enqueue(broker, 0.5), _enqueue(broker, 30, timeout=1)]
        for job_id in jobs:
            wait_until(lambda job_id=job_id: run.ended(job_id), timeout=60, what=f"job {job_id}")
        assert {run.jobs[job_id].pid for job_id in jobs} == {worker.pid}  # no horse: the worker runs them

    run.poll()
    worked, _, kills = run.measured(WORK)
    assert kills == 0 and worked >= 1.4
    assert_counted(_counted(run), worked, 0.0, kills=0, jobs=2, heartbeat=HEARTBEAT)


def _run_quick_jobs(run: Run, broker: str, count: int) -> set[int]:
    """Run `count` jobs of 0.5 s; the pids of their work-horses."""
    jobs = [_enqueue(broker, 0.5) for _ in range(count)]
    for job_id in jobs:
        wait_until(lambda job_id=job_id: run.ended(job_id), timeout=60, what=f"job {job_id}")
    return {run.jobs[job_id].pid for job_id in jobs}


@needs_pid_namespace
def test_a_restarted_worker_whose_horses_reuse_pids_counts_nothing_twice(tmp_path: Path, broker: str) -> None:
    """Two worker lifetimes in fresh PID namespaces, like a container restarted in its pod: the worker is pid 1
    both times, so its work-horses get the same pids, and the first one was SIGKILLed in the middle of a job."""
    state = tmp_path / "state"
    state.mkdir()
    run = Run(state, deaths=None)
    horse_pids: list[set[int]] = []
    with _worker(run, broker, tmp_path, "MeasuredWorker", prefix=PREFIX) as outer:
        horse_pids.append(_run_quick_jobs(run, broker, 3))
        killed = _enqueue(broker, 30)
        job = wait_until(lambda: run.started(killed), timeout=60, what="the job killed with its worker")
        wait_until(lambda: time.monotonic() >= job.start + 1.0, timeout=30, what="1 s of it")
        worker_pid = int(Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()[0])
        os.kill(worker_pid, signal.SIGKILL)  # pid 1 of the namespace: the kernel kills all in it
        outer.wait(timeout=30)
        died = {killed: time.monotonic()}  # an upper bound: the namespace's processes are all gone
    with _worker(run, broker, tmp_path, "MeasuredWorker", prefix=PREFIX):
        horse_pids.append(_run_quick_jobs(run, broker, 3))
    run.poll()

    assert horse_pids[0] & horse_pids[1], f"the second lifetime's horses should reuse pids: {horse_pids}"
    worked, killed_for, kills = run.measured(WORK, died)
    assert kills == 1
    counted = _counted(run)
    assert_counted(counted, worked, killed_for, kills, jobs=7, heartbeat=HEARTBEAT)
    run.assert_never_decreasing()
