"""Candor tracer: job-seconds counters that include in-flight work at every scrape.

    from prometheus_client import Counter
    from candor_tracer import trace

    JOB_SECONDS = Counter("job_worked_seconds_total", "Time spent on jobs", ["job"])

    with trace(JOB_SECONDS, job="resize"):
        resize()

    @trace(JOB_SECONDS, job="send")
    async def send(): ...

With CANDOR_STATE_DIR set (the sidecar injection sets it), every process also keeps a journal there for
the sidecar to read. Its heartbeat carries the container's cgroup v2 memory figures for the sidecar's
memory check; an app whose "container" is something else reports its own:

    from candor_tracer import MemoryFigures, set_memory_source

    set_memory_source(lambda: MemoryFigures(current=my_rss(), limit=MY_LIMIT))

The heartbeat also carries the container's CPU counters and, once declared, how many traces the process
can run at once, for the sidecar's load weights (the gunicorn, Celery and RQ integrations declare it):

    from candor_tracer import declare_capacity

    declare_capacity(8)  # this process serves 8 requests at once
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from candor_tracer.capacity import declare_capacity
from candor_tracer.cgroup import MemoryFigures, MemorySource
from candor_tracer.heartbeat import set_memory_source

if TYPE_CHECKING:
    from candor_tracer.tracer import Trace, Tracer
    from candor_tracer.watchdog import LoopWatch

    default_tracer: Tracer = Tracer()  # for the type checker only: made on first use, below
    # trace(counter, **labels): count the seconds of a block or function into `counter`, in flight
    # included, on the default tracer (the bound method itself: one call less on every trace).
    trace = default_tracer.trace

__all__ = ["LoopWatch", "MemoryFigures", "MemorySource", "Trace", "Tracer", "declare_capacity", "default_tracer",
           "heartbeat", "set_memory_source", "trace", "watch_event_loop"]

# The app's API loads on first use: `from candor_tracer import trace` in an app costs what it always
# did, while the sidecar, which imports only the journal package below this one, never loads
# prometheus_client (and the http.server, urllib and ssl modules it brings).
_LAZY = frozenset({"LoopWatch", "Trace", "Tracer", "default_tracer", "trace"})
_loading = threading.Lock()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _loading:  # one default tracer, whichever thread asks first
        if "default_tracer" not in globals():
            from candor_tracer.tracer import Trace, Tracer
            from candor_tracer.watchdog import LoopWatch

            default = Tracer()
            globals().update(Trace=Trace, Tracer=Tracer, LoopWatch=LoopWatch, default_tracer=default,
                             trace=default.trace)
    return globals()[name]


def heartbeat() -> None:
    """Mark app progress for the sidecar's deadlock check (journal mode; nearly free otherwise)."""
    __getattr__("default_tracer").heartbeat()


def watch_event_loop(loop: asyncio.AbstractEventLoop | None = None, threshold: float = 0.5,
                     tracer: Tracer | None = None) -> LoopWatch:
    """Record stalls of `loop` (default: the running loop) longer than `threshold` seconds."""
    from candor_tracer.watchdog import LoopWatch

    if loop is None:
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop: pass loop= instead
    return LoopWatch(tracer or __getattr__("default_tracer"), loop, threshold)
