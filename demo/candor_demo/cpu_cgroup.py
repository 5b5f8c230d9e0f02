"""A CPU cgroup per demo instance, so each app sees its own CPU figures and one can be given a low CPU limit.

In a pod the app's container is its own cgroup; the demo's instances are plain processes, so the demo makes
one group per instance (under `candor-demo-<pid>/` of the cpu hierarchy), starts the app inside it (children
inherit it), and for the starvation phase writes a low quota, exactly what a lower CPU limit does. Needs root
and a cpu controller (v1 `cpu`/`cpuacct`, mounted apart or together, or v2 with `cpu` enabled); without them
`create_groups` raises CgroupUnavailable and the demo skips that phase.

Only groups this module created are touched, and `remove` deletes them again; groups left by a demo that
was SIGKILLed are swept by the next run (`sweep_stale`).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
PREFIX = "candor-demo-"


class CgroupUnavailable(RuntimeError):
    """No writable CPU cgroup hierarchy here (not root, no cpu controller, or a read-only /sys/fs/cgroup)."""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def hierarchies(root: Path = ROOT) -> tuple[bool, list[Path]]:
    """(v2?, the directories a group is made in): v2's root, or v1's cpu and cpuacct hierarchies."""
    if "cpu" in _read(root / "cgroup.controllers").split():
        return True, [root]
    found: list[Path] = []
    for name, marker in (("cpu", "cpu.cfs_quota_us"), ("cpuacct", "cpuacct.usage"), ("cpu,cpuacct", "cpuacct.usage")):
        base = root / name
        if (base / marker).exists() and base.resolve() not in [f.resolve() for f in found]:
            found.append(base)
    return False, found


class CpuCgroup:
    """One instance's group: created by `create_groups`, joined by its app at start, removed at the end."""

    def __init__(self, directories: list[Path], v2: bool) -> None:
        self.directories, self.v2 = directories, v2

    def wrap(self, args: list[str]) -> list[str]:
        """`args` run inside the group: a shell joins it, then execs them (same pid), so the program is in the
        group before it runs anything. No preexec_fn: that may deadlock in a forked child of a threaded demo."""
        procs = " ".join(shlex.quote(str(directory / "cgroup.procs")) for directory in self.directories)
        script = f'for procs in {procs}; do echo $$ > "$procs" || exit 126; done; exec "$@"'
        return ["/bin/sh", "-c", script, "candor-cgroup", *args]

    def set_limit(self, cores: float | None) -> None:
        """A CFS quota of `cores` (None: unlimited), as a container's CPU limit sets it."""
        quota = None if cores is None else max(1000, int(cores * PERIOD_US))
        for directory in self.directories:
            if self.v2:
                (directory / "cpu.max").write_text(f"{'max' if quota is None else quota} {PERIOD_US}\n")
            elif (directory / "cpu.cfs_quota_us").exists():
                (directory / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (directory / "cpu.cfs_quota_us").write_text(f"{-1 if quota is None else quota}\n")

    def usage_seconds(self) -> float | None:
        """CPU time the group's processes used since it was created."""
        for directory in self.directories:
            if self.v2:
                for line in _read(directory / "cpu.stat").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
            elif (text := _read(directory / "cpuacct.usage").strip()).isdigit():
                return int(text) / 1e9
        return None


class CpuGroups:
    """The run's parent group `candor-demo-<pid>` and a child per instance."""

    def __init__(self, names: list[str], root: Path = ROOT) -> None:
        self.v2, self.bases = hierarchies(root)
        if os.geteuid() != 0 or not self.bases:
            raise CgroupUnavailable("CPU cgroups need root and a cpu controller (v1 cpu/cpuacct or v2 cpu)")
        self.parent = f"{PREFIX}{os.getpid()}"
        self.created: list[Path] = []
        self.groups: dict[str, CpuCgroup] = {}
        try:
            for base in self.bases:
                if self.v2:
                    _enable_cpu(base)
                self._mkdir(base / self.parent)
                if self.v2:
                    _enable_cpu(base / self.parent)
                for name in names:
                    self._mkdir(base / self.parent / name)
        except OSError as error:
            self.remove()
            raise CgroupUnavailable(f"cannot create CPU cgroups under {self.bases[0]}: {error}") from error
        self.groups = {name: CpuCgroup([base / self.parent / name for base in self.bases], self.v2)
                       for name in names}

    def _mkdir(self, directory: Path) -> None:
        directory.mkdir()
        self.created.append(directory)

    def remove(self, timeout: float = 10.0) -> None:
        """Remove every group this run created, deepest first (their processes must have exited)."""
        deadline = time.monotonic() + timeout
        for directory in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:  # a process that just exited is still leaving the group
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.created = []


def sweep_stale(root: Path = ROOT) -> list[Path]:
    """Remove the empty groups of earlier runs whose demo process is gone (it was SIGKILLed); returns them."""
    removed: list[Path] = []
    _, bases = hierarchies(root)
    for base in bases:
        for parent in base.glob(f"{PREFIX}*"):
            match = re.fullmatch(rf"{PREFIX}(\d+)", parent.name)
            if match is None or Path(f"/proc/{match.group(1)}").exists():
                continue
            for directory in [*sorted(p for p in parent.iterdir() if p.is_dir()), parent]:
                try:
                    directory.rmdir()
                    removed.append(directory)
                except OSError:  # a process still runs in it: leave it
                    pass
    return removed


def _enable_cpu(directory: Path) -> None:
    control = directory / "cgroup.subtree_control"
    if "cpu" not in _read(control).split():
        control.write_text("+cpu\n")
