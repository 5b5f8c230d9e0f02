"""Process identity for journal names: pid plus start time, so a reused pid cannot collide."""

from __future__ import annotations

import time


def process_start_ticks(pid: int | None = None) -> int:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); wall-clock nanoseconds where /proc is absent."""
    path = f"/proc/{'self' if pid is None else pid}/stat"
    try:
        with open(path, "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces and parentheses: split after the last ")".
        fields = stat[stat.rindex(b")") + 2:].split()
        return int(fields[19])  # fields[0] is field 3 (state); field 22 is fields[19]
    except (OSError, ValueError, IndexError):
        return time.time_ns()
