"""gunicorn server hooks: every worker journals from the moment it is forked, and releases its journal on exit.

    # gunicorn.conf.py
    from candor_tracer.gunicorn import post_fork, when_ready, worker_exit

(with hooks of your own, call these from them). Trace the requests with candor_tracer.wsgi.traced_wsgi
(or candor_tracer.asgi for ASGI workers). gunicorn is never imported: the hooks only use the `worker`
object gunicorn passes them.

- `when_ready`: the arbiter opens a journal of its own, so a pod is seen alive while workers are replaced.
- `post_fork`: the new worker opens its own journal at once (an idle worker is seen by the sidecar) and
  declares its capacity for the load weights: its `threads` (1 for sync workers, N for gthread), or its
  `worker_connections` for the async worker classes (gevent, eventlet, uvicorn's…).
- `worker_exit`: a worker leaving (`max_requests` recycling, a graceful stop, the SIGABRT of `timeout`)
  closes its journal with a final heartbeat. gunicorn also runs this hook in the arbiter for a worker
  that was already gone; there it does nothing.

A worker SIGKILLed (the second step of `timeout`, the OOM killer) has its open traces closed at its last
heartbeat by the sidecar.
"""

from __future__ import annotations

import os
from typing import Any

from candor_tracer.capacity import declare_capacity
from candor_tracer.tracer import Tracer

__all__ = ["post_fork", "when_ready", "worker_exit"]


def _tracer() -> Tracer:
    from candor_tracer import default_tracer
    return default_tracer


def when_ready(server: Any) -> None:
    _tracer().open_journal()


_THREADED = ("gunicorn.workers.sync", "gunicorn.workers.gthread")


def worker_capacity(worker: Any) -> int | None:
    """How many requests a gunicorn worker serves at once, from its class and config (None: unknown)."""
    cfg = getattr(worker, "cfg", None)
    setting = "threads" if type(worker).__module__ in _THREADED else "worker_connections"
    value = getattr(cfg, setting, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000 else None


def post_fork(server: Any, worker: Any) -> None:
    declare_capacity(worker_capacity(worker))
    _tracer().open_journal()


def worker_exit(server: Any, worker: Any) -> None:
    if getattr(worker, "pid", None) == os.getpid():  # the worker itself, never the arbiter cleaning up after it
        _tracer().close()
