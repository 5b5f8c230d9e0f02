"""Memory figures for the heartbeat: their type, and the default source (the container's cgroup, v2 or v1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_MAX_FIGURE = 2**63 - 1  # the journal stores each figure as a signed 64-bit integer (-1: none)
_UNLIMITED_V1 = 1 << 60  # cgroup v1 says "no limit" with a huge page-aligned number, not "max"


@dataclass(frozen=True)
class MemoryFigures:
    """What a heartbeat reports about the app's memory, in bytes; None where unknown.

    The sidecar's memory check compares `current - inactive_file` (the working set, as the kubelet
    computes it) with `limit`. Values must be ints in [0, 2**63): anything else raises ValueError naming
    the field.
    """

    current: int | None  # memory.current: bytes in use
    limit: int | None  # memory.max: None when unlimited ("max") or absent
    inactive_file: int | None = None  # memory.stat inactive_file: page cache the kernel can drop

    def __post_init__(self) -> None:
        for name in ("current", "limit", "inactive_file"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value <= _MAX_FIGURE):
                raise ValueError(f"MemoryFigures.{name} must be None or an int of bytes in [0, 2**63), "
                                 f"got {value!r}")


# What candor_tracer.set_memory_source() takes: called at every heartbeat, so it must be quick.
MemorySource = Callable[[], MemoryFigures]

NO_FIGURES = MemoryFigures(None, None, None)


def _own_cgroup_dir(root: Path, proc_cgroup: Path) -> tuple[Path, bool]:
    """This process's memory cgroup directory and whether it is cgroup v1.

    v2: `0::/path` in /proc/self/cgroup. v1 (nodes that still run it): the `memory` controller's line,
    under root/memory. Inside a container the path names the host's tree while the container sees its own
    cgroup at the mount root, so the mount root is the fallback for both.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("0::"):
            candidate = root / line[3:].lstrip("/")
            if (candidate / "memory.current").exists():
                return candidate, False
    if (root / "memory.current").exists():
        return root, False
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "memory" in controllers.split(","):
            candidate = root / "memory" / path.lstrip("/")
            if (candidate / "memory.usage_in_bytes").exists():
                return candidate, True
    if (root / "memory" / "memory.usage_in_bytes").exists():
        return root / "memory", True
    return root, False


def read_int_file(path: Path) -> int | None:
    """A cgroup file holding one integer; None when absent, unreadable or not a number (e.g. "max")."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_inactive_file(path: Path, key_name: str = "inactive_file") -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == key_name:
                return int(value) if value.strip().isdigit() else None
    except OSError:
        return None
    return None


class MemoryReader:
    """The default memory source: this process's cgroup figures, v2 or v1.

    Finds the cgroup directory once, then reads the three figures on each call (absent → None). On v1 they
    are `memory.usage_in_bytes`, `memory.limit_in_bytes` (unlimited → None) and `total_inactive_file`
    (the hierarchy's figure, as v2's inactive_file covers the whole subtree).
    """

    def __init__(self, root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> None:
        self.directory, self.v1 = _own_cgroup_dir(root, proc_cgroup)

    def read(self) -> MemoryFigures:
        d = self.directory
        if self.v1:
            limit = read_int_file(d / "memory.limit_in_bytes")
            return MemoryFigures(current=read_int_file(d / "memory.usage_in_bytes"),
                                 limit=None if limit is None or limit >= _UNLIMITED_V1 else limit,
                                 inactive_file=_read_inactive_file(d / "memory.stat", "total_inactive_file"))
        return MemoryFigures(current=read_int_file(d / "memory.current"), limit=read_int_file(d / "memory.max"),
                             inactive_file=_read_inactive_file(d / "memory.stat"))
