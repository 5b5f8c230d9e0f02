"""The resizer's background job loop, shared by thread workers and process workers.

Jobs have half-normal lengths between 0.1 s and `max_seconds` (mostly short, a few long). Each job is
counted three ways: the truth file (start/end), the Candor tracer (journal mode, in-flight time included at
every scrape) and the naive end-of-job counter (incremented once, when the job ends, as most apps do).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from prometheus_client import Counter

from candor_demo.truth import TruthWriter

MIN_JOB_SECONDS = 0.1
JOB_CLASS = "resize"

# Not registered anywhere: the tracer journals it and the sidecar exports it. The label is not called `job`
# (the obvious name) because Prometheus would rename it to `exported_job` next to its own `job` label.
TRACED_JOB_SECONDS = Counter("job_worked_seconds", "Seconds spent working on jobs, in-flight time included",
                             ["job_class", "worker"], registry=None)


def job_length(rng: random.Random, max_seconds: float) -> float:
    """Half-normal between 0.1 s and max_seconds (σ = max/2, clipped)."""
    spread = max(max_seconds - MIN_JOB_SECONDS, 0.0)
    return min(max_seconds, MIN_JOB_SECONDS + abs(rng.gauss(0.0, spread / 2.0)))


def run_worker(slot: int, max_seconds: float, stop: threading.Event, truth: TruthWriter,
               on_start: Callable[[int, float, float], None], on_done: Callable[[int, float], None],
               seed: int | None = None) -> None:
    """Takes jobs until `stop` is set; an interrupted job ends at the stop (its seconds still count)."""
    from candor_tracer import trace  # imported here so CANDOR_STATE_DIR is set before the tracer starts

    rng = random.Random(seed)
    while not stop.is_set():
        length = job_length(rng, max_seconds)
        # The truth's clock reads sit right next to the tracer's own: just before it starts (the tracer reads
        # its clock first thing in __enter__) and as the block's last statement (first thing in __exit__).
        # The truth line and the parent's notice are written inside the block, so both sides count them.
        started = time.monotonic()
        ended: float | None = None
        try:
            with trace(TRACED_JOB_SECONDS, job_class=JOB_CLASS, worker=str(slot)):
                truth.start(slot, at=started)
                on_start(slot, started, length)
                stop.wait(length)  # the "work": resizer workers mostly wait on I/O
                ended = time.monotonic()
        finally:
            ended = ended if ended is not None else time.monotonic()
            truth.end(slot, at=ended)
            on_done(slot, ended - started)
