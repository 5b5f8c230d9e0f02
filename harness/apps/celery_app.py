"""The Celery app the integration tests run with `celery -A harness.apps.celery_app worker`.

Broker: the test's redis-server ($CANDOR_TEST_REDIS). The worker reports each task's start and end around
Candor's trace (framework_runs.report), so the test knows each task's measured busy time. With PROMETHEUS_MULTIPROC_DIR
set, each task also adds its duration to a prometheus_client multiprocess-mode counter when it ends,
the way apps count job seconds without Candor, for the side-by-side comparison.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from prometheus_client import Counter

from candor_tracer.celery import instrument
from harness.apps.framework_runs import busy, report

BROKER = os.environ["CANDOR_TEST_REDIS"]

app = Celery("candor_test", broker=BROKER)
app.conf.update(
    worker_prefetch_multiplier=1,  # a child takes one task at a time: kills hit exactly the task the test chose
    task_acks_late=False,  # a killed task is not delivered again
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

TASK_SECONDS = Counter("job_worked_seconds_total", "Seconds spent in Celery tasks", ["task", "queue"])
PLAIN_SECONDS = Counter("plain_task_seconds_total", "Task seconds added when a task ends", ["task"])


# The worker's own measure of each task, around Candor's trace: receivers run in the order they were
# connected, so this prerun receiver runs before the tracer's and the postrun one after it.
@signals.task_prerun.connect
def measure_start(task_id: str, task: Any, **_: Any) -> None:
    report("start", task_id, task.name)


instrument(app, TASK_SECONDS, queue_label="queue")


@signals.task_postrun.connect
def measure_end(task_id: str, task: Any, **_: Any) -> None:
    report("end", task_id, task.name)


def _run(task: Any, seconds: float) -> float:
    def count_plain(elapsed: float) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            PLAIN_SECONDS.labels(task=task.name).inc(elapsed)

    return busy(seconds, count_plain)


@app.task(bind=True, name="work")
def work(self: Any, seconds: float) -> float:
    return _run(self, seconds)


@app.task(bind=True, name="limited", time_limit=1.0)
def limited(self: Any, seconds: float) -> float:
    """Killed by Celery's hard time limit after 1 s (SIGTERM then SIGKILL of the pool child)."""
    return _run(self, seconds)
