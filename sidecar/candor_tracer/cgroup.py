"""The container's cgroup v2 memory figures, as the sidecar's memory check needs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryFigures:
    current: int | None  # memory.current, bytes
    limit: int | None  # memory.max, bytes; None when "max" (unlimited) or absent
    inactive_file: int | None  # memory.stat inactive_file, bytes (page cache the kernel can drop)


NO_FIGURES = MemoryFigures(None, None, None)


def _own_cgroup_dir(root: Path, proc_cgroup: Path) -> Path:
    """This process's cgroup v2 directory: `0::/path` in /proc/self/cgroup, "/" inside a cgroup namespace."""
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                candidate = root / line[3:].lstrip("/")
                if (candidate / "memory.current").exists():
                    return candidate
    except OSError:
        pass
    return root


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_inactive_file(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "inactive_file":
                return int(value) if value.strip().isdigit() else None
    except OSError:
        return None
    return None


class MemoryReader:
    """Finds the cgroup directory once, then reads the three figures on each call (absent → None)."""

    def __init__(self, root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> None:
        self.directory = _own_cgroup_dir(root, proc_cgroup)

    def read(self) -> MemoryFigures:
        d = self.directory
        return MemoryFigures(current=_read_int(d / "memory.current"), limit=_read_int(d / "memory.max"),
                             inactive_file=_read_inactive_file(d / "memory.stat"))
