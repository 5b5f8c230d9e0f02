"""Real Celery 5 workers on a real Redis broker, traced by `candor_tracer.celery.instrument` (one line).

Tasks are killed the ways Celery kills them: the hard `time_limit` (the pool child is terminated), a pool
child SIGKILLed as the OOM killer would, and children retired by `max_tasks_per_child`. The journals'
totals (the sidecar's reader) are checked against the tasks' own measured busy time.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from harness.apps.framework_runs import (
    Run,
    assert_counted,
    children_of,
    declared_capacities,
    framework_process,
    journal_pids,
    total,
)
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5


def _worker(run: Run, broker: str, tmp_path: Path, *options: str) -> object:
    argv = ["celery", "-A", "harness.apps.celery_app", "worker", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat", *options]
    return framework_process(argv, run.state_dir, tmp_path / "worker.log", HEARTBEAT, {"CANDOR_TEST_REDIS": broker})


def _send(broker: str, name: str, seconds: float) -> str:
    # Sending needs no worker code: the test process does not import the app module's tasks.
    from celery import Celery

    sender = Celery("sender", broker=broker)
    try:
        return str(sender.send_task(name, args=[seconds]).id)
    finally:
        sender.close()


def test_prefork_time_limit_sigkill_and_recycling_lose_at_most_one_heartbeat_per_kill(
        tmp_path: Path, broker: str, run: Run) -> None:
    with _worker(run, broker, tmp_path, "-P", "prefork", "-c", "2", "--max-tasks-per-child", "2") as worker:
        limited = _send(broker, "limited", 30)  # killed by the 1 s hard time limit
        quick = [_send(broker, "work", 0.5) for _ in range(4)]  # its child is retired after every 2 tasks
        wait_until(lambda: run.dead(limited), timeout=60, what="the time limit to kill the pool child")
        for task_id in quick:
            wait_until(lambda task_id=task_id: run.ended(task_id), timeout=60, what=f"task {task_id}")

        oom = _send(broker, "work", 30)  # its child is SIGKILLed, as the OOM killer does
        job = wait_until(lambda: run.started(oom), timeout=60, what="the task the test kills")
        wait_until(lambda: time.monotonic() >= job.start + 1.2, timeout=30, what="1.2 s of the long task")
        os.kill(job.pid, signal.SIGKILL)
        wait_until(lambda: run.dead(oom), timeout=30, what="the SIGKILLed child to exit")

        # The pool replaced every child it lost or retired; each new child journals before its first task.
        def two_journaling_children() -> bool:
            children = children_of(worker.pid)
            return len(children) == 2 and set(children) <= journal_pids(run.state_dir)

        wait_until(two_journaling_children, timeout=30, what="two pool children again, each with a journal")
        # For the load weights: each child runs one task at a time; the parent runs none and declares nothing.
        wait_until(lambda: all(declared_capacities(run.state_dir).get(pid) == 1 for pid in children_of(worker.pid)),
                   timeout=30, what="each pool child declaring a capacity of 1")
        assert declared_capacities(run.state_dir).get(worker.pid) is None
        run.poll()

    run.poll()  # the whole worker is gone: every journal folds
    pids = {job.pid for job in run.jobs.values()}
    assert len(pids) >= 3, f"recycling should have spread 6 tasks over at least 3 children, got {pids}"

    worked, killed, kills = run.measured("work")
    counted = total(run.state_dir, "job_worked_seconds", task="work", queue="celery")
    assert kills == 1
    assert_counted(counted, worked, killed, kills, jobs=5, heartbeat=HEARTBEAT)

    # The hard limit terminates the child: the task may still unwind (its end reported, its trace closed)
    # before the SIGKILL that follows 0.1 s later, or not; either way it loses at most one heartbeat.
    worked, killed, kills = run.measured("limited")
    counted = total(run.state_dir, "job_worked_seconds", task="limited", queue="celery")
    assert 0.9 <= worked + killed < 3.0  # the 1 s limit (counted from before the task body starts)
    assert_counted(counted, worked, killed, kills=1, jobs=1, heartbeat=HEARTBEAT)
    run.assert_never_decreasing()


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_pools_count_overlapping_tasks_and_a_killed_worker(
        tmp_path: Path, broker: str, run: Run, pool: str) -> None:
    with _worker(run, broker, tmp_path, "-P", pool, "-c", "3") as worker:
        wait_until(lambda: worker.pid in journal_pids(run.state_dir), timeout=60,
                   what="the worker's journal (opened when it is ready)")
        wait_until(lambda: declared_capacities(run.state_dir).get(worker.pid) == (3 if pool == "threads" else 1),
                   timeout=30, what="the worker declaring its pool's concurrency")
        quick = [_send(broker, "work", 0.5) for _ in range(3)]
        for task_id in quick:
            wait_until(lambda task_id=task_id: run.ended(task_id), timeout=60, what=f"task {task_id}")
        jobs = [run.jobs[task_id] for task_id in quick]
        assert {job.pid for job in jobs} == {worker.pid}  # these pools run tasks in the worker process
        if pool == "threads":  # three threads: the tasks overlapped, and each is counted
            assert max(job.start for job in jobs) < min(job.end or 0.0 for job in jobs)

        lost = _send(broker, "work", 30)
        job = wait_until(lambda: run.started(lost), timeout=60, what="the task that dies with its worker")
        wait_until(lambda: time.monotonic() >= job.start + 1.0, timeout=30, what="1 s of the long task")
        os.kill(worker.pid, signal.SIGKILL)
        wait_until(lambda: run.dead(lost), timeout=30, what="the worker to die")

    run.poll()
    worked, killed, kills = run.measured("work")
    counted = total(run.state_dir, "job_worked_seconds", task="work", queue="celery")
    assert kills == 1
    assert_counted(counted, worked, killed, kills, jobs=4, heartbeat=HEARTBEAT)
    run.assert_never_decreasing()


def _multiprocess_total(directory: Path, task: str) -> float:
    """What a /metrics in prometheus_client's multiprocess mode would serve: the sum over every pid's file."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry.get_sample_value("plain_task_seconds_total", {"task": task}) or 0.0


def test_side_by_side_with_prometheus_client_multiprocess_mode(tmp_path: Path, broker: str, run: Run,
                                                               record_property: pytest.RecordProperty) -> None:
    """The same prefork worker also counts each task's seconds the usual way without Candor: a multiprocess-mode
    counter incremented when the task ends. Only Candor's figures are asserted; the others are recorded
    (printed with -s, and in the junit XML) for the README's comparison."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    rows: list[tuple[str, float, float, float]] = []  # (scenario, measured, Candor, multiprocess mode)

    def candor(task: str) -> float:
        return total(run.state_dir, "job_worked_seconds", task=task, queue="celery")

    argv = ["celery", "-A", "harness.apps.celery_app", "worker", "--loglevel", "WARNING", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-P", "prefork", "-c", "2", "--max-tasks-per-child", "2"]
    env = {"CANDOR_TEST_REDIS": broker, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with framework_process(argv, run.state_dir, tmp_path / "worker.log", HEARTBEAT, env):
        quick = [_send(broker, "work", 0.5) for _ in range(4)]
        for task_id in quick:
            wait_until(lambda task_id=task_id: run.ended(task_id), timeout=60, what=f"task {task_id}")
        worked, _, _ = run.measured("work")
        candor_before, plain_before = candor("work"), _multiprocess_total(multiproc, "work")
        rows.append(("4 tasks of 0.5 s, children recycled by max_tasks_per_child=2", worked, candor_before,
                     plain_before))

        limited = _send(broker, "limited", 30)
        wait_until(lambda: run.dead(limited), timeout=60, what="the time limit to kill the pool child")
        run.poll()
        worked, killed, _ = run.measured("limited")
        rows.append(("a task stopped by time_limit=1s", worked + killed, candor("limited"),
                     _multiprocess_total(multiproc, "limited")))

        long = _send(broker, "work", 30)
        job = wait_until(lambda: run.started(long), timeout=60, what="the long task")
        wait_until(lambda: time.monotonic() >= job.start + 1.5, timeout=30, what="1.5 s of the long task")
        ours, theirs = candor("work") - candor_before, _multiprocess_total(multiproc, "work") - plain_before
        rows.append(("a 30 s task, read 1.5 s into it", time.monotonic() - job.start, ours, theirs))
        # No reading of the journals from here to the kill: what the reader then has is the last heartbeat.
        wait_until(lambda: time.monotonic() >= job.start + 3.0, timeout=30, what="3 s of the long task")
        os.kill(job.pid, signal.SIGKILL)
        died = wait_until(lambda: run.deaths is not None and run.deaths.died.get(job.pid), timeout=30,
                          what="the SIGKILLed child to exit")
        run.poll()
        rows.append(("the same task, its child SIGKILLed (OOM) 3 s into it", died - job.start,
                     candor("work") - candor_before, _multiprocess_total(multiproc, "work") - plain_before))
        pid_files = len(list(multiproc.glob("*.db")))

    run.poll()
    worked, killed, _ = run.measured("work")
    measured_all = worked + killed + sum(run.measured("limited")[:2])
    rows.append(("all of the above, after the worker stopped", measured_all, candor("work") + candor("limited"),
                 _multiprocess_total(multiproc, "work") + _multiprocess_total(multiproc, "limited")))

    table = ["| scenario | measured | Candor | multiprocess mode |", "|---|---:|---:|---:|"]
    table += [f"| {name} | {measured:.2f} s | {ours:.2f} s | {theirs:.2f} s |" for name, measured, ours, theirs in rows]
    table.append(f"\nmultiprocess mode left {pid_files} per-pid files for {len({j.pid for j in run.jobs.values()})} "
                 f"pool children that ran tasks")
    print("\n" + "\n".join(table))
    record_property("comparison", "\n".join(table))

    for (_, measured, ours, _), kills, jobs in zip(rows, (0, 1, 0, 1, 2), (4, 1, 1, 1, 6), strict=True):
        assert_counted(ours, measured, 0.0, kills, jobs, HEARTBEAT)
