"""RQ: a worker class that traces every job it performs, made in one line.

    # myapp/workers.py
    from candor_tracer.rq import traced_worker_class
    JOB_SECONDS = Counter("job_worked_seconds_total", "Seconds spent in RQ jobs", ["job"])
    TracedWorker = traced_worker_class(JOB_SECONDS)      # labels: job="myapp.tasks.resize"

    $ rq worker --worker-class myapp.workers.TracedWorker high default

Only this module imports RQ; candor_tracer does not depend on it. The trace wraps `perform_job`, which RQ
runs in the work-horse it forks for each job (`Worker`) or in the worker itself (`SimpleWorker`). A horse
journals on its own, and a horse killed by RQ (a stop-job command, the monitor's kill, the OOM killer) has
its open trace closed at its last heartbeat. A job that exceeds `job_timeout` gets RQ's JobTimeoutException
raised inside it, so its trace ends like any failed job's: nothing is lost.

The worker process itself opens a journal when it starts working: a pod whose only app process is an RQ
worker is then seen alive between jobs, not as an app that exited each time a horse did. It declares a
capacity of one job (the load weights' occupancy): a horse runs that job and declares nothing of its own.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import Counter
from rq.job import Job
from rq.queue import Queue
from rq.worker import BaseWorker, Worker

from candor_tracer.capacity import declare_capacity
from candor_tracer.label_check import require_labels
from candor_tracer.tracer import Tracer

__all__ = ["traced_worker_class"]

W = TypeVar("W", bound=BaseWorker)


def _default_tracer() -> Tracer:
    from candor_tracer import default_tracer
    return default_tracer


def traced_worker_class(counter: Counter, base: type[W] = Worker, *, job_label: str = "job",  # type: ignore[assignment]
                        queue_label: str | None = None, tracer: Tracer | None = None,
                        name: str = "TracedWorker") -> type[W]:
    """A subclass of `base` (rq.Worker, rq.SimpleWorker or your own) tracing each job into `counter`.

    Labels: `job_label` = the job's function name (`job.func_name`); with `queue_label`, also the queue's name.
    """
    names = (job_label,) if queue_label is None else (job_label, queue_label)
    require_labels(counter, names, "candor_tracer.rq.traced_worker_class")
    if not (isinstance(base, type) and issubclass(base, BaseWorker)):
        raise TypeError(f"candor_tracer.rq.traced_worker_class: base must be an rq Worker class, got {base!r}")
    chosen = tracer or _default_tracer()

    def work(self: W, *args: Any, **kwargs: Any) -> bool:
        declare_capacity(1)  # one job at a time, in a horse (Worker) or here (SimpleWorker)
        chosen.open_journal()
        result: bool = base.work(self, *args, **kwargs)  # traced has one base: this is super()
        return result

    def perform_job(self: W, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        labels = {job_label: str(job.func_name)}
        if queue_label is not None:
            labels[queue_label] = str(queue.name)
        with chosen.trace(counter, **labels):
            result: bool = base.perform_job(self, job, queue, *args, **kwargs)
            return result

    traced: type[W] = type(name, (base,), {"work": work, "perform_job": perform_job,
                                           "__doc__": f"{base.__name__} tracing its jobs into {counter._name}"})
    return traced
