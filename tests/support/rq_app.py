"""The RQ jobs and traced worker classes the integration tests run with `rq worker --worker-class ...`.

Jobs report their own start and end to the test's Redis ($CANDOR_TEST_REDIS, also the RQ connection).
"""

from __future__ import annotations

import os

from prometheus_client import Counter
from rq import SimpleWorker, Worker, get_current_job

from candor_tracer.rq import traced_worker_class
from tests.support.framework_runs import client_for, sleep_as_a_job

JOB_SECONDS = Counter("job_worked_seconds_total", "Seconds spent in RQ jobs", ["job", "queue"])
TracedWorker = traced_worker_class(JOB_SECONDS, Worker, queue_label="queue")
TracedSimpleWorker = traced_worker_class(JOB_SECONDS, SimpleWorker, queue_label="queue", name="TracedSimpleWorker")


def work(seconds: float) -> float:
    job = get_current_job()
    assert job is not None
    return sleep_as_a_job(client_for(os.environ["CANDOR_TEST_REDIS"]), job.id, "work", seconds)
