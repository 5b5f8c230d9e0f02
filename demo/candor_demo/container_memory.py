"""Each demo instance plays a container with a memory limit, without needing cgroups or root.

In a pod the tracer's heartbeat carries the container's cgroup v2 figures (`memory.current`, `memory.max`).
The demo's instances are plain processes on one host, so their "container" is the process itself: the
heartbeat reports its resident set size against the limit in CANDOR_APP_MEMORY_LIMIT. The sidecar's memory
check is unchanged: it reads the same journal fields and fails at the policy's maxPercent.
"""

from __future__ import annotations

import importlib
import os

from candor_demo.ballast import rss_bytes
from candor_tracer.cgroup import MemoryFigures, MemoryReader

MEMORY_LIMIT_ENV = "CANDOR_APP_MEMORY_LIMIT"


class ProcessMemoryReader(MemoryReader):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def read(self) -> MemoryFigures:
        return MemoryFigures(current=rss_bytes(), limit=self.limit, inactive_file=0)


def report_process_memory() -> int | None:
    """Make this process's heartbeats carry its RSS and the env limit; call before the first trace."""
    raw = os.environ.get(MEMORY_LIMIT_ENV)
    if not raw:
        return None
    limit = int(raw)

    def reader() -> MemoryReader:
        return ProcessMemoryReader(limit)

    # The heartbeat thread builds its reader with `MemoryReader()` when the journal opens. (The package's
    # `heartbeat` attribute is the function of that name, hence the lookup of the module itself.)
    module = importlib.import_module("candor_tracer.heartbeat")
    if not hasattr(module, "MemoryReader"):
        raise RuntimeError("candor_tracer.heartbeat no longer builds a MemoryReader: the demo cannot give its "
                           "instances a memory limit (update candor_demo.container_memory)")
    module.MemoryReader = reader  # type: ignore[attr-defined]
    return limit
