"""Each demo instance plays a container with a memory limit, without needing cgroups or root.

In a pod the tracer's heartbeat carries the container's cgroup v2 figures (`memory.current`, `memory.max`).
The demo's instances are plain processes on one host, so their "container" is the process itself: through
the tracer's public `set_memory_source`, the heartbeat reports its resident set size against the limit in
CANDOR_APP_MEMORY_LIMIT. The sidecar's memory check is unchanged: it reads the same journal fields and
fails at the policy's maxPercent.
"""

from __future__ import annotations

import os

from candor_demo.ballast import rss_bytes
from candor_tracer import MemoryFigures, set_memory_source
from candor_tracer.pod_contract import APP_MEMORY_LIMIT_ENV


def process_memory_source(limit: int) -> MemoryFigures:
    """This process's RSS against `limit` (no page cache to discount: RSS holds none)."""
    return MemoryFigures(current=rss_bytes(), limit=limit, inactive_file=0)


def report_process_memory() -> int | None:
    """Make this process's heartbeats carry its RSS and the env limit; returns the limit (None: unset)."""
    raw = os.environ.get(APP_MEMORY_LIMIT_ENV)
    if not raw:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError(f"{APP_MEMORY_LIMIT_ENV}={raw!r} is not a number of bytes") from None
    if limit <= 0:
        raise ValueError(f"{APP_MEMORY_LIMIT_ENV}={raw!r} must be a positive number of bytes")
    set_memory_source(lambda: process_memory_source(limit))
    return limit
