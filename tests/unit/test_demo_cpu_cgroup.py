"""The demo's CPU cgroups: where they are made, what happens without them, and the sweep of a killed run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from candor_demo.cpu_cgroup import CgroupUnavailable, CpuGroups, hierarchies, sweep_stale


def test_no_cpu_controller_means_no_groups_and_a_clear_reason(tmp_path: Path) -> None:
    assert hierarchies(tmp_path) == (False, [])
    with pytest.raises(CgroupUnavailable, match="need root and a cpu controller"):
        CpuGroups(["resizer-1"], root=tmp_path)


def test_v1_groups_are_made_in_the_cpu_and_cpuacct_hierarchies(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("0\n")
    assert hierarchies(tmp_path) == (False, [tmp_path / "cpu", tmp_path / "cpuacct"])
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    assert hierarchies(v2) == (True, [v2])


def test_the_groups_of_a_run_that_is_gone_are_swept_and_a_live_run_s_are_kept(tmp_path: Path) -> None:
    base = tmp_path / "cpuacct"
    base.mkdir()
    (base / "cpuacct.usage").write_text("0\n")
    dead = base / "candor-demo-999999999"  # above any pid_max: no such process
    (dead / "resizer-1").mkdir(parents=True)
    live = base / "candor-demo-1"  # init: always running
    (live / "resizer-1").mkdir(parents=True)
    assert sorted(sweep_stale(tmp_path)) == [dead, dead / "resizer-1"]
    assert not dead.exists() and (live / "resizer-1").exists()


def test_a_wrapped_command_joins_every_hierarchy_s_group_under_its_own_pid(tmp_path: Path) -> None:
    import subprocess

    from candor_demo.cpu_cgroup import CpuCgroup

    directories = [tmp_path / "cpu" / "g", tmp_path / "cpuacct" / "g"]
    for directory in directories:
        directory.mkdir(parents=True)
    group = CpuCgroup(directories, v2=False)
    shown = subprocess.run(group.wrap(["/bin/sh", "-c", "echo $$", "it's"]), capture_output=True, text=True,
                           check=True).stdout.strip()
    # The program is exec'd by the shell that wrote its pid: the same process, in the group before it ran.
    assert [(d / "cgroup.procs").read_text().strip() for d in directories] == [shown, shown]
