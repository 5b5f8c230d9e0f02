"""Health checks from real statvfs, real /proc-shaped files and journal writer figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from candor_sidecar.checks import FAIL, PASS, WARN, deadlock_checks, disk_checks, journal_check, memory_check
from candor_sidecar.config import parse_config
from candor_sidecar.memory import MemoryReading, parse_quantity, read_visible_processes
from candor_sidecar.presence import AppPresence
from candor_tracer.journal.reader import JournalSnapshot, WriterInfo


def _writer(**overrides: object) -> WriterInfo:
    values: dict[str, object] = dict(journal="j", pid=42, heartbeat=100.0, memory_current=None, memory_max=None,
                                     inactive_file=None, inflight=0, oldest_inflight_start=None,
                                     last_stall_at=None, last_stall_seconds=None)
    values.update(overrides)
    return WriterInfo(**values)  # type: ignore[arg-type]


def test_disk_fails_at_a_threshold_below_the_real_usage_and_passes_above(tmp_path: Path) -> None:
    stat = os.statvfs(tmp_path)
    used = 100.0 * (stat.f_blocks - stat.f_bfree) / (stat.f_blocks - stat.f_bfree + stat.f_bavail)
    if used < 1 or used > 99:
        pytest.skip(f"disk usage {used:.1f}% leaves no room for thresholds on both sides")
    low = parse_config({"disk": {"paths": [str(tmp_path)], "maxPercent": max(used - 1, 0.5)}})
    high = parse_config({"disk": {"paths": [str(tmp_path)], "maxPercent": min(used + 1, 100)}})
    [failing] = disk_checks(low)
    [passing] = disk_checks(high)
    assert failing.status == FAIL and failing.reason.startswith(f"disk {tmp_path}")
    assert passing.status == PASS
    assert failing.observed_unit == "percent" and abs(failing.observed_value - used) < 1  # type: ignore[operator]


def test_a_missing_disk_path_warns_instead_of_passing(tmp_path: Path) -> None:
    [result] = disk_checks(parse_config({"disk": {"paths": [str(tmp_path / "gone")]}}))
    assert result.status == WARN and "cannot statvfs" in result.output


def test_memory_from_the_journal_uses_working_set_over_limit() -> None:
    config = parse_config({"memory": {"maxPercent": 80}})
    mib = 1 << 20
    hot = _writer(memory_current=950 * mib, inactive_file=40 * mib, memory_max=1000 * mib)
    result = memory_check(config, [hot], own_cgroup=lambda: None)
    assert result.status == FAIL and result.observed_value == 91.0
    assert result.reason == "memory 91% > 80%"
    cool = _writer(memory_current=950 * mib, inactive_file=500 * mib, memory_max=1000 * mib)
    assert memory_check(config, [cool], own_cgroup=lambda: None).status == PASS


def test_memory_without_any_limit_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANDOR_APP_MEMORY_LIMIT", raising=False)
    unlimited = _writer(memory_current=100, memory_max=None)
    result = memory_check(parse_config({}), [unlimited], own_cgroup=lambda: MemoryReading(5, None, "cgroup"))
    assert result.status == WARN and "no memory limit" in result.output


def test_memory_falls_back_to_the_sidecar_cgroup_limit() -> None:
    result = memory_check(parse_config({}), [], own_cgroup=lambda: MemoryReading(900, 1000, "sidecar cgroup"))
    assert result.status == FAIL and "sidecar cgroup" in result.output


def test_visible_processes_are_summed_leaving_out_pause_and_the_sidecar(tmp_path: Path) -> None:
    def process(pid: int, comm: str, rss_kib: int) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        (tmp_path / str(pid) / "status").write_text(f"Name:\t{comm}\nVmRSS:\t{rss_kib} kB\n")

    process(1, "pause", 500)
    process(7, "python3", 1000)
    process(8, "worker", 3000)
    process(os.getpid(), "candor", 9000)
    reading = read_visible_processes(8 << 20, proc=tmp_path)
    assert reading is not None and reading.working_set == 4000 * 1024 and reading.limit == 8 << 20
    assert parse_quantity("512Mi") == 512 << 20 and parse_quantity("536870912") == 536870912
    assert parse_quantity("lots") is None


def test_deadlock_heartbeat_job_duration_and_stall() -> None:
    config = parse_config({"deadlock": {"heartbeatTimeout": "5s", "maxJobDuration": "60s"}})
    fresh = _writer(heartbeat=98.0, inflight=1, oldest_inflight_start=50.0)
    results = {r.key: r for r in deadlock_checks(config, [fresh], now=100.0)}
    assert results["deadlock:heartbeat"].status == PASS and results["deadlock:heartbeat"].observed_value == 2.0
    assert results["deadlock:jobDuration"].status == PASS
    stuck = _writer(heartbeat=90.0, inflight=2, oldest_inflight_start=10.0, last_stall_at=95.0,
                    last_stall_seconds=4.0)
    results = {r.key: r for r in deadlock_checks(config, [stuck], now=100.0)}
    assert results["deadlock:heartbeat"].status == FAIL
    assert results["deadlock:jobDuration"].status == FAIL and "90s > 60s" in results["deadlock:jobDuration"].reason
    assert results["deadlock:eventLoop"].status == FAIL
    old_stall = _writer(heartbeat=99.0, last_stall_at=50.0, last_stall_seconds=1.0)
    results = {r.key: r for r in deadlock_checks(config, [old_stall], now=100.0)}
    assert results["deadlock:eventLoop"].status == PASS


def test_no_live_app_is_a_warning_never_a_pass() -> None:
    [result] = deadlock_checks(parse_config({}), [], now=100.0)
    assert result.status == WARN and result.key == "deadlock:heartbeat"


def _snapshot(writers: tuple[WriterInfo, ...], now: float, last_fold: float | None = None) -> JournalSnapshot:
    return JournalSnapshot(series=(), writers=writers, skipped=(), last_fold=last_fold, now=now)


def test_an_app_seen_alive_then_gone_fails_the_heartbeat_check_until_a_new_writer_appears() -> None:
    config = parse_config({})
    presence = AppPresence()
    assert presence.observe(_snapshot((), now=10.0)) is None  # not started yet: nothing to miss
    assert presence.observe(_snapshot((_writer(),), now=20.0)) is None
    absence = presence.observe(_snapshot((), now=21.0, last_fold=1.7e9))
    assert absence is not None
    [gone] = deadlock_checks(config, [], now=23.2, absence=absence)
    assert gone.status == FAIL and gone.key == "deadlock:heartbeat" and gone.reason == "app exited"
    assert gone.output == "app process exited 3.2s ago (no live journal writer)" and gone.observed_value == 3.2
    assert presence.observe(None) is None  # unreadable journals are no news
    assert presence.observe(_snapshot((_writer(pid=43),), now=30.0)) is None  # the app container restarted
    back = deadlock_checks(config, [_writer(pid=43, heartbeat=29.5)], now=30.0,
                           absence=presence.observe(_snapshot((_writer(pid=43),), now=30.0)))
    assert [check.status for check in back] == [PASS, PASS]


def test_a_restarted_sidecar_knows_from_the_archive_that_an_app_was_here() -> None:
    absence = AppPresence().observe(_snapshot((), now=5.0, last_fold=1000.0))
    assert absence is not None and absence.since is None
    [gone] = deadlock_checks(parse_config({}), [], now=5.0, absence=absence, wall_now=1012.5)
    assert gone.status == FAIL and gone.reason == "app exited"
    assert gone.output == "app process exited (no live journal writer; its journal was folded 12.5s ago)"


def test_an_exit_fails_only_for_heartbeat_timeout_so_a_restarted_untraced_app_gets_traffic_back() -> None:
    config = parse_config({"deadlock": {"heartbeatTimeout": "10s"}})
    presence = AppPresence()
    presence.observe(_snapshot((_writer(),), now=20.0))
    absence = presence.observe(_snapshot((), now=21.0))
    assert absence is not None
    [recent] = deadlock_checks(config, [], now=29.0, absence=absence)
    assert recent.status == FAIL and recent.reason == "app exited"
    [old] = deadlock_checks(config, [], now=31.5, absence=absence)
    assert old.status == WARN and old.reason == "no app heartbeat"
    assert old.output == ("app process exited 11.5s ago (no live journal writer); "
                          "no new app process seen for over 10s (not traced yet?)")
    [archived] = deadlock_checks(config, [], now=5.0, absence=AppPresence().observe(_snapshot((), 5.0, 1000.0)),
                                 wall_now=1030.0)
    assert archived.status == WARN


def test_thousands_of_skipped_journals_are_counted_and_only_a_few_named() -> None:
    skipped = tuple(f"/var/run/candor/bad-{n}.journal" for n in range(10_000))
    (check,) = journal_check(JournalSnapshot((), (), skipped, None, 0.0), None)
    assert check.status == WARN and check.observed_value == 10_000
    assert check.output.startswith("skipped 10000 corrupt journals: /var/run/candor/bad-0.journal, ")
    assert check.output.endswith(" and 9990 more") and len(check.output) < 1000
