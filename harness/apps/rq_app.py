"""The RQ jobs and traced worker classes the integration tests run with `rq worker --worker-class ...`.

Each worker class is made by candor_tracer.rq's one line, then subclassed to report each job's start and end
(around Candor's trace) to the test (framework_runs.report).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.queue import Queue

from candor_tracer.rq import traced_worker_class
from harness.apps.framework_runs import busy, report

JOB_SECONDS = Counter("job_worked_seconds_total", "Seconds spent in RQ jobs", ["job", "queue"])
TracedWorker = traced_worker_class(JOB_SECONDS, Worker, queue_label="queue")
TracedSimpleWorker = traced_worker_class(JOB_SECONDS, SimpleWorker, queue_label="queue", name="TracedSimpleWorker")


def _measured(job: Job, perform: Any) -> bool:
    report("start", job.id, str(job.func_name))
    try:
        return bool(perform())
    finally:
        report("end", job.id, str(job.func_name))


class MeasuredWorker(TracedWorker):
    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        return _measured(job, lambda: super(MeasuredWorker, self).perform_job(job, queue, *args, **kwargs))


class MeasuredSimpleWorker(TracedSimpleWorker):
    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        return _measured(job, lambda: super(MeasuredSimpleWorker, self).perform_job(job, queue, *args, **kwargs))


def work(seconds: float) -> float:
    return busy(seconds)
