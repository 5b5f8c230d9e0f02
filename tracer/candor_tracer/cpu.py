"""CPU figures for the heartbeat: the app container's cumulative CPU counters, read from its cgroup (v2 or v1).

The heartbeat carries raw counters, never rates: the sidecar derives utilisation and throttling from two
beats, so a beat costs a few small reads and a reader restart loses nothing. Figures the kernel does not
offer (no CFS quota, no PSI, no cpu controller) are None, and the sidecar then leaves the weight alone.

v2 (`0::/path`): `cpu.stat` usage_usec, nr_periods, nr_throttled, throttled_usec; `cpu.max` ("max 100000"
or "50000 100000"); `cpu.pressure` ("some avg10=…"). v1: `cpuacct.usage` (ns) in the cpuacct hierarchy,
`cpu.stat` nr_periods, nr_throttled, throttled_time (ns) and `cpu.cfs_quota_us`/`cpu.cfs_period_us` in the
cpu hierarchy (often one directory mounted as `cpu,cpuacct`); PSI per cgroup only on v2 (`cpu.pressure`
of a v1 group exists only with the kernel's psi_cgroup_v1), so on v1 the pressure figure is None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_MAX_FIGURE = 2**63 - 1


@dataclass(frozen=True)
class CpuFigures:
    """One reading of the container's CPU counters; None where the kernel offers no such figure.

    `group` tells containers apart (the cgroup directory's inode): counters of two groups are never
    subtracted from each other.
    """

    usage_ns: int | None = None  # CPU time used by the group since it was created
    periods: int | None = None  # CFS enforcement periods elapsed (only with a quota)
    throttled_periods: int | None = None  # periods in which the group hit its quota
    throttled_ns: int | None = None  # time the group's tasks were held back by the quota
    quota_cores: float | None = None  # cpu.max / cfs_quota_us ÷ period: the limit in cores; None when unlimited
    online_cores: int | None = None  # CPUs the process may run on (the ceiling without a quota)
    pressure_some: float | None = None  # PSI "some avg10": % of the last 10 s some task waited for a CPU
    group: int = 0

    def __post_init__(self) -> None:
        for name in ("usage_ns", "periods", "throttled_periods", "throttled_ns", "online_cores"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value <= _MAX_FIGURE):
                raise ValueError(f"CpuFigures.{name} must be None or an int in [0, 2**63), got {value!r}")
        if self.quota_cores is not None and not 0 < self.quota_cores < 1e6:
            raise ValueError(f"CpuFigures.quota_cores must be None or a number of cores above 0, got "
                             f"{self.quota_cores!r}")
        if self.pressure_some is not None and not 0 <= self.pressure_some <= 100:
            raise ValueError(f"CpuFigures.pressure_some must be None or a percentage, got {self.pressure_some!r}")

    @property
    def capacity_cores(self) -> float | None:
        """The cores the group can use at most: its quota, else the CPUs it may run on."""
        if self.quota_cores is not None:
            return self.quota_cores
        return float(self.online_cores) if self.online_cores else None


NO_CPU = CpuFigures()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_keyed(text: str | None) -> dict[str, int]:
    """`cpu.stat`'s "key value" lines as ints (lines that are not, skipped)."""
    figures: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            figures[key] = int(value)
    return figures


def parse_cpu_max(text: str | None) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "50000 100000") as cores; None when unlimited or unreadable."""
    parts = (text or "").split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit() or int(parts[1]) == 0:
        return None
    cores = int(parts[0]) / int(parts[1])
    return cores if cores > 0 else None


def parse_v1_quota(quota: str | None, period: str | None) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` (-1: unlimited) ÷ `cpu.cfs_period_us` as cores."""
    quota_us, period_us = (quota or "").strip(), _int(period)
    if not quota_us.isdigit() or not period_us or int(quota_us) == 0:
        return None
    return int(quota_us) / period_us


def parse_pressure_some(text: str | None) -> float | None:
    """PSI's `some avg10=…` percentage from a `cpu.pressure` file."""
    for line in (text or "").splitlines():
        words = line.split()
        if words and words[0] == "some":
            for word in words[1:]:
                key, _, value = word.partition("=")
                if key == "avg10":
                    try:
                        number = float(value)
                    except ValueError:
                        return None
                    return number if 0 <= number <= 100 else None
    return None


def online_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _own_lines(proc_cgroup: Path) -> list[str]:
    return (_read(proc_cgroup) or "").splitlines()


def _v1_dir(root: Path, lines: list[str], controller: str, marker: str) -> Path | None:
    """The process's directory in the v1 hierarchy holding `controller` (the mount root inside a container)."""
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controller in controllers.split(","):
            mount = root / controllers  # "cpu,cpuacct" is mounted under that name (and symlinked)
            for base in (mount, root / controller):
                for candidate in (base / path.lstrip("/"), base):
                    if (candidate / marker).exists():
                        return candidate
    return None


def _v2_dir(root: Path, lines: list[str]) -> Path | None:
    """The process's unified group when the cpu controller lives there: on a pure v2 host (the root is the
    unified mount), or on a hybrid one whose `unified` mount has the controller (then `cpu.max` exists)."""
    pure = (root / "cgroup.controllers").exists()
    for line in lines:
        if line.startswith("0::"):
            relative = line[3:].lstrip("/")
            base = root if pure else root / "unified"
            for candidate in (base / relative, base):
                if (candidate / "cpu.max").exists() or (pure and (candidate / "cpu.stat").exists()):
                    return candidate
    return None


class CpuReader:
    """The default CPU source: this process's cgroup, found once, read at each beat.

    v2 wins when the process's unified group has `cpu.stat` with usage (a pure v2 host, or hybrid with the
    cpu controller on v2); otherwise v1's cpu and cpuacct hierarchies.
    """

    def __init__(self, root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> None:
        lines = _own_lines(proc_cgroup)
        self.v2 = _v2_dir(root, lines)
        self.cpu_dir = _v1_dir(root, lines, "cpu", "cpu.cfs_quota_us") if self.v2 is None else None
        self.cpuacct_dir = _v1_dir(root, lines, "cpuacct", "cpuacct.usage") if self.v2 is None else None
        self.group = _inode(self.v2 or self.cpuacct_dir or self.cpu_dir or root)

    @property
    def version(self) -> int | None:
        """2, 1, or None when no CPU cgroup files were found."""
        if self.v2 is not None:
            return 2
        return 1 if self.cpu_dir is not None or self.cpuacct_dir is not None else None

    def read(self) -> CpuFigures:
        cores = online_cores()
        if self.v2 is not None:
            stat = parse_keyed(_read(self.v2 / "cpu.stat"))
            usage = stat.get("usage_usec")
            throttled = stat.get("throttled_usec")
            return CpuFigures(usage_ns=None if usage is None else usage * 1000, periods=stat.get("nr_periods"),
                              throttled_periods=stat.get("nr_throttled"),
                              throttled_ns=None if throttled is None else throttled * 1000,
                              quota_cores=parse_cpu_max(_read(self.v2 / "cpu.max")), online_cores=cores,
                              pressure_some=parse_pressure_some(_read(self.v2 / "cpu.pressure")), group=self.group)
        usage_ns = _int(_read(self.cpuacct_dir / "cpuacct.usage")) if self.cpuacct_dir is not None else None
        if self.cpu_dir is None:
            return CpuFigures(usage_ns=usage_ns, online_cores=cores, group=self.group)
        stat = parse_keyed(_read(self.cpu_dir / "cpu.stat"))
        quota = parse_v1_quota(_read(self.cpu_dir / "cpu.cfs_quota_us"), _read(self.cpu_dir / "cpu.cfs_period_us"))
        return CpuFigures(usage_ns=usage_ns, periods=stat.get("nr_periods"),
                          throttled_periods=stat.get("nr_throttled"), throttled_ns=stat.get("throttled_time"),
                          quota_cores=quota, online_cores=cores,
                          pressure_some=parse_pressure_some(_read(self.cpu_dir / "cpu.pressure")), group=self.group)
