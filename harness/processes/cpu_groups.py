"""Real CPU cgroups with a CFS quota, for processes that must run as containers with CPU limits do (needs root).

    group = CpuGroup("candor-bench-1/s3", cores=0.1).create()
    subprocess.Popen([...], preexec_fn=group.join)   # the child enters the group before it runs anything
    ...
    group.remove()                                    # once its processes have exited

cgroup v1 (this machine: `cpu` and `cpuacct` hierarchies, mounted apart or together) or v2 (the `cpu`
controller enabled down to the group). Only groups this module created are touched, and removed again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CgroupUnavailable(RuntimeError):
    """No writable CPU cgroup hierarchy here (not root, or no cpu controller)."""


def _v1_dirs(root: Path) -> list[Path]:
    """The v1 hierarchies to create a group in: the one with the quota files and the one with cpuacct."""
    found: list[Path] = []
    for name, marker in (("cpu", "cpu.cfs_quota_us"), ("cpuacct", "cpuacct.usage"), ("cpu,cpuacct", "cpuacct.usage")):
        base = root / name
        if (base / marker).exists() and base.resolve() not in [f.resolve() for f in found]:
            found.append(base)
    return found


class CpuGroup:
    def __init__(self, relative: str, cores: float, root: Path = ROOT) -> None:
        self.relative = relative.strip("/")
        self.cores = cores
        self.root = root
        self.v2 = "cpu" in _read(root / "cgroup.controllers").split()
        self.bases = [root] if self.v2 else _v1_dirs(root)
        if os.geteuid() != 0 or not self.bases:
            raise CgroupUnavailable("CPU cgroups need root and a cpu controller (v1 cpu/cpuacct or v2 cpu)")
        self.created: list[Path] = []

    @property
    def directories(self) -> list[Path]:
        return [base / self.relative for base in self.bases]

    def create(self) -> CpuGroup:
        quota = max(1000, int(self.cores * PERIOD_US))
        for base in self.bases:
            current = base
            for part in self.relative.split("/"):
                if self.v2:  # each level hands the cpu controller down to its children
                    _enable_cpu(current)
                current = current / part
                if not current.exists():
                    current.mkdir()
                    self.created.append(current)
            if self.v2:
                (current / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            elif (current / "cpu.cfs_quota_us").exists():
                (current / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (current / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        return self

    def join(self) -> None:
        """Move the calling process into the group (as a Popen preexec_fn: the child, before exec)."""
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the groups this object created, deepest first (their processes must have exited)."""
        deadline = time.monotonic() + timeout
        for directory in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:  # a process just exited is still leaving the group
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.created = []


def _enable_cpu(directory: Path) -> None:
    control = directory / "cgroup.subtree_control"
    if "cpu" not in _read(control).split():
        control.write_text("+cpu\n")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
