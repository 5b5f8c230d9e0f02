"""Celery: trace every task of an app in one line, through Celery's own signals.

    from candor_tracer.celery import instrument
    TASK_SECONDS = Counter("job_worked_seconds_total", "Seconds spent in Celery tasks", ["task"])
    instrument(app, TASK_SECONDS)                        # labels: task="proj.tasks.resize"
    instrument(app, COUNTER, queue_label="queue")        # counter labelled ["task", "queue"]

A trace opens at `task_prerun` and closes at `task_postrun`, in the process and thread that run the task,
so prefork, threads, solo (and gevent/eventlet) pools all count each task once, overlapping ones included.
Celery itself is imported only when `instrument` is called: candor_tracer does not depend on it.

Prefork: each pool child journals on its own. `worker_process_init` opens the child's journal at once, so
the sidecar sees an idle child too, and declares the child's capacity (one task at a time) for the load
weights; `worker_ready` declares the pool's concurrency for the pools that run tasks in the worker process
itself (threads, solo, gevent, eventlet). `worker_process_shutdown` (a child retired by `max_tasks_per_child` or
a pool shrink) closes it with a final heartbeat. A child killed by `time_limit` or the OOM killer never
reaches `task_postrun`: its journal's open trace is closed at the child's last heartbeat by the reader.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Counter

from candor_tracer.capacity import declare_capacity
from candor_tracer.label_check import require_labels
from candor_tracer.tracer import Trace, Tracer

__all__ = ["CeleryInstrumentation", "instrument"]


def _default_tracer() -> Tracer:
    from candor_tracer import default_tracer  # the package imports this module's siblings, not the reverse
    return default_tracer


class CeleryInstrumentation:
    """The signal receivers `instrument` connected; `uninstrument()` disconnects them."""

    def __init__(self, app: Any, counter: Counter, tracer: Tracer, task_label: str, queue_label: str | None) -> None:
        self.app = app
        self.counter = counter
        self.tracer = tracer
        self.task_label = task_label
        self.queue_label = queue_label
        # (task id, thread) -> the task's open trace; a thread runs one task at a time, and keying by
        # thread keeps two deliveries of one task id (a redelivery racing a slow ack) apart
        self._open: dict[tuple[str, int], Trace] = {}
        self._connected: list[tuple[Any, Any]] = []

    def _labels(self, task: Any) -> dict[str, str]:
        labels = {self.task_label: str(task.name)}
        if self.queue_label is not None:
            labels[self.queue_label] = _queue_of(task)
        return labels

    def task_prerun(self, sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        task = task if task is not None else sender
        if task is None or getattr(task, "app", None) is not self.app:
            return  # signals are process-wide: another app's task is not ours to count
        traced = self.tracer.trace(self.counter, **self._labels(task))
        traced.__enter__()
        self._open[(str(task_id), threading.get_ident())] = traced

    def task_postrun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        traced = self._open.pop((str(task_id), threading.get_ident()), None)
        if traced is not None:
            traced.__exit__(None, None, None)

    def worker_process_init(self, **_: Any) -> None:
        declare_capacity(1)  # a prefork child runs one task at a time
        self.tracer.open_journal()

    def worker_process_shutdown(self, **_: Any) -> None:
        self.tracer.close()

    def worker_ready(self, sender: Any = None, **_: Any) -> None:
        # solo and threads pools run tasks in this process: show it to the sidecar before the first task
        pool = getattr(sender, "pool", None)
        limit = getattr(pool, "limit", None)
        if type(pool).__module__ != "celery.concurrency.prefork" and isinstance(limit, int) and limit >= 1:
            declare_capacity(min(limit, 1_000_000))  # prefork: the children declare, one task each
        self.tracer.open_journal()

    def connect(self) -> None:
        from celery import signals

        for signal, receiver in ((signals.task_prerun, self.task_prerun), (signals.task_postrun, self.task_postrun),
                                 (signals.worker_process_init, self.worker_process_init),
                                 (signals.worker_process_shutdown, self.worker_process_shutdown),
                                 (signals.worker_ready, self.worker_ready)):
            signal.connect(receiver, weak=False)
            self._connected.append((signal, receiver))

    def uninstrument(self) -> None:
        """Disconnect the receivers; traces already open still close at their task's end."""
        while self._connected:
            signal, receiver = self._connected.pop()
            signal.disconnect(receiver)


def _queue_of(task: Any) -> str:
    """The queue a task came from: the routing key of its delivery (the queue's name under default routing);
    "eager" for a task run in the caller's process (`task_always_eager`, `apply()`)."""
    delivery = getattr(task.request, "delivery_info", None) or {}
    queue = delivery.get("routing_key") or delivery.get("queue")
    if not queue:
        return "eager" if getattr(task.request, "is_eager", False) else ""
    return str(queue)


def instrument(app: Any, counter: Counter, *, task_label: str = "task", queue_label: str | None = None,
               tracer: Tracer | None = None) -> CeleryInstrumentation:
    """Trace every task `app` runs into `counter`, labelled by task name (and by queue with `queue_label`).

    Call it where the app is created (the module `celery -A` loads), so every pool child inherits it.
    """
    names = (task_label,) if queue_label is None else (task_label, queue_label)
    require_labels(counter, names, "candor_tracer.celery.instrument")
    instrumentation = CeleryInstrumentation(app, counter, tracer or _default_tracer(), task_label, queue_label)
    instrumentation.connect()
    return instrumentation
