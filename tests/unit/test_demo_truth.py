"""The demo's ground truth: busy intervals appended by several processes, paired and integrated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from candor_demo.truth import BusyInterval, TruthWriter, busy_seconds, close_open, read_intervals


def test_start_and_end_lines_pair_up_per_worker_and_process(tmp_path: Path) -> None:
    path = tmp_path / "truth.log"
    writer = TruthWriter(path)
    writer.start(0, at=10.0)
    writer.start(1, at=10.5)
    writer.end(0, at=12.0)
    writer.start(0, at=12.0)
    writer.end(1, at=11.0)
    writer.close()
    intervals = read_intervals(path)
    assert [(i.slot, i.start, i.end) for i in intervals] == [(0, 10.0, 12.0), (1, 10.5, 11.0), (0, 12.0, None)]


def test_lines_from_other_processes_interleave_without_tearing(tmp_path: Path) -> None:
    path = tmp_path / "truth.log"
    script = (
        "import sys\nfrom candor_demo.truth import TruthWriter\n"
        "w = TruthWriter(sys.argv[1])\n"
        "for n in range(500):\n    w.start(int(sys.argv[2]), at=n)\n    w.end(int(sys.argv[2]), at=n + 0.5)\n")
    children = [subprocess.Popen([sys.executable, "-c", script, str(path), str(slot)]) for slot in range(4)]
    assert [child.wait(60) for child in children] == [0, 0, 0, 0]
    intervals = read_intervals(path)
    assert len(intervals) == 2000
    assert all(i.end is not None and i.end - i.start == 0.5 for i in intervals)
    assert busy_seconds(intervals, 0.0, 1000.0, now=1000.0) == pytest.approx(1000.0)


def test_a_torn_last_line_and_garbage_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "truth.log"
    path.write_text("start 0 7 1.0\nend 0 7 2.0\nnonsense\nstart 1 7 abc\nstart 2 7 3.")
    intervals = read_intervals(path)
    assert [(i.slot, i.start, i.end) for i in intervals] == [(0, 1.0, 2.0), (2, 3.0, None)]
    assert read_intervals(tmp_path / "absent.log") == []


def test_a_killed_process_job_ends_at_the_kill_and_others_stay_open() -> None:
    intervals = [BusyInterval(0, 100, 5.0, None), BusyInterval(1, 101, 6.0, None), BusyInterval(0, 100, 1.0, 4.0)]
    closed = close_open(intervals, {100: 9.0})
    assert closed[0].end == 9.0 and closed[1].end is None and closed[2].end == 4.0


def test_busy_seconds_counts_only_the_overlap_and_open_jobs_up_to_now() -> None:
    intervals = [BusyInterval(0, 1, 0.0, 10.0), BusyInterval(1, 1, 5.0, None)]
    assert busy_seconds(intervals, 2.0, 6.0, now=20.0) == pytest.approx(4.0 + 1.0)
    assert busy_seconds(intervals, 8.0, 30.0, now=20.0) == pytest.approx(2.0 + 12.0)
    assert busy_seconds(intervals, 8.0, 30.0, now=20.0, slot=1) == pytest.approx(12.0)
    assert busy_seconds(intervals, 11.0, 4.0, now=20.0) == 0.0
