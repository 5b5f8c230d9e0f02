"""Bad input and faults: corrupt journals and archives are skipped loudly once; the app never sees an error."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from candor_tracer import Tracer
from candor_tracer.journal.format import MAX_SERIES
from candor_tracer.journal.reader import read_totals
from candor_tracer.modes import DEFAULT_HEARTBEAT_INTERVAL as DEFAULT
from candor_tracer.modes import heartbeat_interval_from_env as _heartbeat_interval_from_env


def live_tracer_with_work(state_dir: Path, registry: CollectorRegistry) -> tuple[Tracer, Counter]:
    tracer = Tracer(state_dir=state_dir, heartbeat_interval=0.2)
    counter = Counter("job_worked_seconds_total", "Seconds spent on jobs", ["job"], registry=registry)
    with tracer.trace(counter, job="ok"):
        time.sleep(0.05)
    return tracer, counter


def warnings_naming(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def test_corrupt_and_truncated_journals_are_skipped_with_one_warning_each(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    tracer, _ = live_tracer_with_work(tmp_path, registry)
    try:
        journal = tracer.journal_path
        assert journal is not None
        garbage = tmp_path / "journal-4242-1-00000000.cj"
        garbage.write_bytes(os.urandom(6000))
        truncated = tmp_path / "journal-4243-1-11111111.cj"
        shutil.copyfile(journal, truncated)
        os.truncate(truncated, 3000)
        empty = tmp_path / "journal-4244-1-22222222.cj"
        empty.write_bytes(b"")
        caplog.set_level(logging.WARNING, logger="candor_tracer")
        first = read_totals(tmp_path)
        second = read_totals(tmp_path)
        for bad in (garbage, truncated, empty):
            assert str(bad) in first.skipped and str(bad) in second.skipped
            assert len(warnings_naming(caplog, bad)) == 1, caplog.text
            assert bad.exists()  # kept for a human to look at, never folded
        expected = registry.get_sample_value("job_worked_seconds_total", {"job": "ok"})
        [series] = second.series
        assert series.labels == (("job", "ok"),)
        assert series.value == pytest.approx(expected, abs=1e-9)
        assert [w.journal for w in second.writers] == [str(journal)]
    finally:
        tracer.close()


def test_a_corrupt_archive_is_reported_and_nothing_is_folded_over_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    tracer, _ = live_tracer_with_work(tmp_path, registry)
    tracer.close()  # a dead writer: normally folded at the next read
    (tmp_path / "archive.json").write_text("{ not json")
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    snapshot = read_totals(tmp_path)
    read_totals(tmp_path)
    assert str(tmp_path / "archive.json") in snapshot.skipped
    assert len(warnings_naming(caplog, tmp_path / "archive.json")) == 1
    assert len(list(tmp_path.glob("journal-*.cj"))) == 1  # not folded, not lost
    [series] = snapshot.series
    assert series.value >= 0.05


def test_a_state_directory_that_cannot_be_created_falls_back_to_in_process(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", registry=registry)
    tracer = Tracer(state_dir=blocker / "state")
    for _ in range(3):
        with tracer.trace(counter):
            time.sleep(0.01)
    tracer.heartbeat()
    assert tracer.journal_path is None
    assert registry.get_sample_value("job_worked_seconds_total") >= 0.03  # type: ignore[operator]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and str(blocker / "state") in messages[0] and "in-process" in messages[0]


def test_more_series_than_the_journal_holds_are_still_counted_in_process(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    tracer = Tracer(state_dir=tmp_path)
    try:
        for i in range(MAX_SERIES + 5):
            with tracer.trace(counter, job=f"j{i}"):
                pass
        assert registry.get_sample_value("job_worked_seconds_total", {"job": f"j{MAX_SERIES + 4}"}) is not None
        assert len(read_totals(tmp_path).series) == MAX_SERIES
        full = [r for r in caplog.records if "no room for another series" in r.getMessage()]
        assert len(full) == 1
    finally:
        tracer.close()


def test_a_journal_that_breaks_mid_run_never_reaches_the_app(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", registry=registry)
    tracer = Tracer(state_dir=tmp_path)
    with tracer.trace(counter):
        journal = tracer._journaling.journal
        assert journal is not None
        journal._mm.close()  # every later journal write raises ValueError inside the tracer
        time.sleep(0.02)
    for _ in range(3):
        with tracer.trace(counter):
            pass
    assert registry.get_sample_value("job_worked_seconds_total") >= 0.02  # type: ignore[operator]
    failures = [r for r in caplog.records if "failed" in r.getMessage() and "in-process" in r.getMessage()]
    assert len(failures) == 1
    assert tracer.journal_path is None


@pytest.mark.parametrize(("raw", "expected"),
                         [("0.25", 0.25), ("", DEFAULT), ("soon", DEFAULT), ("0", DEFAULT), ("-3", DEFAULT)])
def test_heartbeat_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                 raw: str, expected: float) -> None:
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    monkeypatch.setenv("CANDOR_HEARTBEAT_INTERVAL", raw)
    assert _heartbeat_interval_from_env() == expected
    warned = any("CANDOR_HEARTBEAT_INTERVAL" in r.getMessage() for r in caplog.records)
    assert warned == (raw not in ("0.25", ""))


def test_writers_with_the_same_pid_and_start_time_never_share_a_journal(tmp_path: Path) -> None:
    """Two writers in one process have the same pid and start time, as reused pids in two containers can."""
    registry = CollectorRegistry()
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=registry)
    tracers = [Tracer(state_dir=tmp_path) for _ in range(2)]
    try:
        for i, tracer in enumerate(tracers):
            with tracer.trace(counter, job="same"):
                time.sleep(0.01 * (i + 1))
        paths = [t.journal_path for t in tracers]
        assert paths[0] != paths[1]
        assert all(p is not None and p.name.startswith(f"journal-{os.getpid()}-") for p in paths)
        assert paths[0].name.split("-")[2] == paths[1].name.split("-")[2]  # type: ignore[union-attr]
        [series] = read_totals(tmp_path).series
        assert series.value == pytest.approx(registry.get_sample_value("job_worked_seconds_total", {"job": "same"}),
                                             abs=1e-6)
    finally:
        for tracer in tracers:
            tracer.close()


def test_a_stopped_reader_holding_the_archive_lock_does_not_hang_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    tracer, _ = live_tracer_with_work(tmp_path, registry)
    tracer.close()  # a dead journal, waiting to be folded
    expected = registry.get_sample_value("job_worked_seconds_total", {"job": "ok"})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, signal, sys\n"
        f"fd = os.open({str(tmp_path / 'archive.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGSTOP)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        caplog.set_level(logging.WARNING, logger="candor_tracer")
        started = time.monotonic()
        snapshot = read_totals(tmp_path)
        assert time.monotonic() - started < 10
        [series] = snapshot.series
        assert series.value == pytest.approx(expected, abs=1e-6)  # counted in place, not folded
        assert len(list(tmp_path.glob("journal-*.cj"))) == 1
        assert any("archive.lock" in r.getMessage() for r in caplog.records)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    folded = read_totals(tmp_path)  # the lock is free again: the fold happens, the total is unchanged
    assert folded.series[0].value == pytest.approx(expected, abs=1e-6)
    assert list(tmp_path.glob("journal-*.cj")) == []
