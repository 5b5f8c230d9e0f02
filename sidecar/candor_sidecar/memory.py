"""Where the memory check gets its figures when the app's journal does not carry them.

1. the processes visible through `shareProcessNamespace`, against `CANDOR_APP_MEMORY_LIMIT` (downward API);
2. the sidecar's own cgroup (v2 `memory.current`/`memory.max`, or v1 `memory.usage_in_bytes`).
Working set = usage − inactive file pages, as the kubelet computes it for evictions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from candor_tracer.cgroup import read_int_file
from candor_tracer.pod_contract import APP_MEMORY_LIMIT_ENV

_UNLIMITED_V1 = 1 << 60  # cgroup v1 reports "no limit" as a huge page-aligned number
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?\s*$")
_SUFFIX = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
           "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class MemoryReading:
    working_set: int  # bytes
    limit: int | None  # bytes; None when unlimited or unknown
    source: str  # where the figures came from, for humans


def parse_quantity(text: str) -> int | None:
    """Bytes from a downward-API value (`536870912`) or a Kubernetes quantity (`512Mi`); None if unreadable."""
    match = _QUANTITY.match(text)
    if not match:
        return None
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


def app_memory_limit() -> int | None:
    value = os.environ.get(APP_MEMORY_LIMIT_ENV, "")
    limit = parse_quantity(value) if value else None
    return limit if limit else None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _process_memory(proc: Path, pid: str) -> int | None:
    """Proportional set size when readable (shared pages counted once), else VmRSS; bytes."""
    try:
        for line in (proc / pid / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in (proc / pid / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_visible_processes(limit: int, proc: Path = Path("/proc")) -> MemoryReading | None:
    """Sum of the other processes of the pod (the sidecar and the pause container left out)."""
    own = str(os.getpid())
    total = 0
    counted = 0
    try:
        entries = [entry.name for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    for pid in entries:
        if pid == own:
            continue
        try:
            if (proc / pid / "comm").read_text().strip() == "pause":
                continue
        except OSError:
            continue
        size = _process_memory(proc, pid)
        if size:
            total += size
            counted += 1
    if not counted:
        return None
    return MemoryReading(total, limit, f"{counted} processes visible in the pod")


def _own_cgroup_paths() -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _candidates(base: Path, relative: str) -> list[Path]:
    # Inside a cgroup namespace the path may be "/" while the files sit at the mount root.
    return [base / relative.lstrip("/"), base]


def read_own_cgroup(root: Path = Path("/sys/fs/cgroup")) -> MemoryReading | None:
    v2, v1 = _own_cgroup_paths()
    if v2 is not None:
        for base in (root, root / "unified"):
            for directory in _candidates(base, v2):
                current = read_int_file(directory / "memory.current")
                if current is None:
                    continue
                limit = read_int_file(directory / "memory.max")  # "max" reads as None
                inactive = _stat_value(directory / "memory.stat", "inactive_file")
                return MemoryReading(max(current - inactive, 0), limit, "sidecar cgroup (v2)")
    if v1 is not None:
        for directory in _candidates(root / "memory", v1):
            usage = read_int_file(directory / "memory.usage_in_bytes")
            if usage is None:
                continue
            limit = read_int_file(directory / "memory.limit_in_bytes")
            inactive = _stat_value(directory / "memory.stat", "total_inactive_file")
            return MemoryReading(max(usage - inactive, 0), None if limit is None or limit >= _UNLIMITED_V1 else limit,
                                 "sidecar cgroup (v1)")
    return None
