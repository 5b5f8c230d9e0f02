"""The heartbeat's CPU figures, parsed from real cgroup files laid out as each version lays them out (v2, v1
with joint or separate cpu/cpuacct hierarchies, hybrid), and from this machine's own cgroup."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from candor_tracer.cpu import (
    CpuFigures,
    CpuReader,
    online_cores,
    parse_cpu_max,
    parse_keyed,
    parse_pressure_some,
    parse_v1_quota,
)
from candor_tracer.heartbeat import HeartbeatThread
from candor_tracer.journal.reader import read_writers
from candor_tracer.journal.writer import JournalWriter
from harness.processes.waiting import wait_until

V2_STAT = ("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 400\nnr_throttled 120\n"
           "throttled_usec 900000\nnr_bursts 0\nburst_usec 0\n")
PRESSURE = "some avg10=42.50 avg60=12.00 avg300=3.10 total=123456\nfull avg10=10.00 avg60=1.00 avg300=0.10 total=99\n"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def proc_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_cgroup_v2_figures_from_the_processes_own_group(tmp_path: Path) -> None:
    root = tmp_path / "sys-fs-cgroup"
    write(root, {"cgroup.controllers": "cpuset cpu io memory pids\n", "cpu.stat": "usage_usec 99\n"})
    group = write(root / "kubepods.slice" / "pod1" / "ctr", {
        "cpu.stat": V2_STAT, "cpu.max": "50000 100000\n", "cpu.pressure": PRESSURE})
    reader = CpuReader(root, proc_cgroup(tmp_path, "0::/kubepods.slice/pod1/ctr\n"))
    assert reader.version == 2
    figures = reader.read()
    assert figures == CpuFigures(usage_ns=2_500_000_000, periods=400, throttled_periods=120,
                                 throttled_ns=900_000_000, quota_cores=0.5, online_cores=online_cores(),
                                 pressure_some=42.5, group=os.stat(group).st_ino)
    assert figures.capacity_cores == 0.5


def test_cgroup_v2_unlimited_inside_a_container_namespace(tmp_path: Path) -> None:
    """In a cgroup namespace /proc/self/cgroup says `0::/` and the container's group is the mount root."""
    root = write(tmp_path / "cg", {"cgroup.controllers": "cpu\n", "cpu.stat": "usage_usec 7\n",
                                   "cpu.max": "max 100000\n"})
    figures = CpuReader(root, proc_cgroup(tmp_path, "0::/\n")).read()
    assert figures.usage_ns == 7000 and figures.quota_cores is None and figures.pressure_some is None
    assert figures.capacity_cores == float(online_cores() or 0)


def test_cgroup_v1_with_cpu_and_cpuacct_mounted_together(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    group = write(root / "cpu,cpuacct" / "kubepods" / "burstable" / "pod1" / "ctr", {
        "cpuacct.usage": "123456789\n", "cpu.cfs_quota_us": "150000\n", "cpu.cfs_period_us": "100000\n",
        "cpu.stat": "nr_periods 50\nnr_throttled 5\nthrottled_time 333000\n"})
    lines = ("11:memory:/kubepods/burstable/pod1/ctr\n4:cpu,cpuacct:/kubepods/burstable/pod1/ctr\n"
             "0::/kubepods/burstable/pod1/ctr\n")
    reader = CpuReader(root, proc_cgroup(tmp_path, lines))
    assert reader.version == 1
    assert reader.read() == CpuFigures(usage_ns=123456789, periods=50, throttled_periods=5, throttled_ns=333000,
                                       quota_cores=1.5, online_cores=online_cores(), group=os.stat(group).st_ino)


def test_cgroup_v1_with_separate_hierarchies_and_no_quota_on_a_hybrid_host(tmp_path: Path) -> None:
    """This machine's layout: `cpu` and `cpuacct` mounted apart, a `unified` v2 mount without the cpu controller."""
    root = tmp_path / "cg"
    write(root / "unified", {"cgroup.controllers": "", "cpu.stat": "usage_usec 1\n", "cpu.pressure": PRESSURE})
    write(root / "cpu" / "app", {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n",
                                 "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"})
    write(root / "cpuacct" / "app", {"cpuacct.usage": "5000\n"})
    reader = CpuReader(root, proc_cgroup(tmp_path, "3:cpu:/app\n2:cpuacct:/app\n0::/\n"))
    assert reader.version == 1
    figures = reader.read()
    assert (figures.usage_ns, figures.periods, figures.quota_cores, figures.pressure_some) == (5000, 0, None, None)


def test_no_cgroup_files_and_malformed_ones_give_no_figures(tmp_path: Path) -> None:
    nothing = CpuReader(tmp_path / "none", tmp_path / "missing")
    assert nothing.version is None
    assert nothing.read().usage_ns is None
    root = write(tmp_path / "cg", {"cgroup.controllers": "cpu\n", "cpu.stat": "usage_usec lots\nnr_periods\n",
                                   "cpu.max": "garbage\n", "cpu.pressure": "some avg10=NaNish\n"})
    figures = CpuReader(root, proc_cgroup(tmp_path, "0::/\n")).read()
    assert (figures.usage_ns, figures.periods, figures.quota_cores, figures.pressure_some) == (None, None, None, None)


@pytest.mark.parametrize(("text", "cores"), [("max 100000", None), ("250000 100000", 2.5), ("0 100000", None),
                                             ("50000 0", None), ("", None), ("1 2 3", None)])
def test_cpu_max(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


def test_v1_quota_pressure_and_keyed_files() -> None:
    assert parse_v1_quota("-1\n", "100000\n") is None
    assert parse_v1_quota("20000\n", "100000\n") == 0.2
    assert parse_v1_quota("20000\n", "0\n") is None
    assert parse_pressure_some(PRESSURE) == 42.5
    assert parse_pressure_some("full avg10=3.00\n") is None
    assert parse_pressure_some("some avg10=140.00\n") is None
    assert parse_keyed("a 1\nb x\nc 3\n") == {"a": 1, "c": 3}


def test_figures_outside_what_a_kernel_reports_are_refused() -> None:
    with pytest.raises(ValueError, match=r"CpuFigures\.usage_ns"):
        CpuFigures(usage_ns=-1)
    with pytest.raises(ValueError, match=r"CpuFigures\.quota_cores"):
        CpuFigures(quota_cores=0.0)
    with pytest.raises(ValueError, match=r"CpuFigures\.pressure_some"):
        CpuFigures(pressure_some=101.0)


def test_this_machines_own_cgroup_counts_the_cpu_this_process_uses() -> None:
    reader = CpuReader()
    before = reader.read()
    if before.usage_ns is None:
        pytest.skip("no CPU cgroup files readable on this machine")
    spent = time.process_time() + 0.05

    def burned() -> bool:
        while time.process_time() < spent:  # work, not sleep: the group's usage must grow
            pass
        after = reader.read().usage_ns
        return after is not None and after > before.usage_ns  # type: ignore[operator]

    wait_until(burned, 30, "the cgroup's CPU usage to grow")


def test_the_heartbeat_carries_cpu_figures_and_the_declared_capacity_to_the_reader(tmp_path: Path) -> None:
    from candor_tracer import declare_capacity

    root = write(tmp_path / "cg", {"cgroup.controllers": "cpu\n", "cpu.stat": V2_STAT, "cpu.max": "50000 100000\n",
                                   "cpu.pressure": PRESSURE})
    writer = JournalWriter(tmp_path / "state")
    declare_capacity(4)
    beats = HeartbeatThread(writer, 0.05, cpu=CpuReader(root, proc_cgroup(tmp_path, "0::/\n")))
    try:
        def load() -> object:
            (info,) = read_writers(tmp_path / "state").writers
            return info.load if info.load is not None and info.load.capacity == 4 else None

        record = wait_until(load, 10, "a beat with the load record")
        assert (record.cpu_usage_ns, record.cpu_periods, record.cpu_throttled_periods, record.cpu_throttled_ns,
                record.cpu_quota_cores, record.cpu_pressure_some) == (2_500_000_000, 400, 120, 900_000_000, 0.5, 42.5)
        (root / "cpu.stat").write_text(V2_STAT.replace("usage_usec 2500000", "usage_usec 3000000"))
        wait_until(lambda: read_writers(tmp_path / "state").writers[0].load.cpu_usage_ns == 3_000_000_000,  # type: ignore[union-attr]
                   10, "the next beat's usage")
    finally:
        beats.stop()
        declare_capacity(None)
        writer.close()


def test_declared_capacity_is_checked_and_forgotten_by_a_forked_child() -> None:
    from candor_tracer import declare_capacity
    from candor_tracer.capacity import declared_capacity

    for bad in (0, -1, 1.5, True, "4", 10**7):
        with pytest.raises(ValueError, match="declare_capacity"):
            declare_capacity(bad)  # type: ignore[arg-type]
    declare_capacity(3)
    try:
        read, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a process of its own, with no capacity until it declares one
            os.write(write_end, str(declared_capacity()).encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        assert os.read(read, 16) == b"None"
        os.close(read)
        assert declared_capacity() == 3
    finally:
        declare_capacity(None)
