"""Named cases of bytes no writer writes, in files any process of the pod can plant in the state directory.

Each costs that file alone: the reader never raises for it, never blocks on it, never lets it inflate a
total or reach the archive, names it once in `skipped` and warns once; every other process's series and
liveness read as before. (The property-based fuzz test in test_journal_fuzz.py covers the space between.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from candor_tracer.cgroup import NO_FIGURES
from candor_tracer.journal.format import ARCHIVE_LOCK_NAME, ARCHIVE_NAME, DESC_HEAD, DESC_OFFSET, FILE_SIZE, crc
from candor_tracer.journal.reader import JournalSnapshot, fold_dead_writers, read_totals
from candor_tracer.journal.writer import JournalWriter
from tests.cases.journal_forge import forge_every_copy, forge_file

logging.getLogger("candor_tracer").setLevel(logging.WARNING)


@dataclass
class Pod:
    """A state directory with one healthy live writer ("good": 2 s done, one trace in flight) and
    whatever a test plants beside it."""

    state: Path
    good: JournalWriter
    good_started: float

    def healthy_value(self, snapshot: JournalSnapshot) -> float:
        [series] = [s for s in snapshot.series if s.labels == (("job", "good"),)]
        return series.value

    def expected_healthy(self, now: float) -> float:
        return 2.0 + (now - self.good_started)

    def victim(self, *, alive: bool = False, start_offsets: tuple[float, ...] = (), completed: float = 1.0,
               ) -> tuple[JournalWriter, Path]:
        """Another writer's journal, with `completed` seconds done and traces in flight at now + offsets."""
        writer = JournalWriter(self.state)
        series = writer.series_index("job_worked_seconds", "h", (("job", "victim"),))
        now = time.monotonic()
        writer.end(writer.start(series, now - completed), series, now)
        for offset in start_offsets:
            writer.start(series, now + offset)
        writer.beat(NO_FIGURES)
        if not alive:
            writer.close()
        return writer, writer.path


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    state = tmp_path / "state"
    good = JournalWriter(state)
    series = good.series_index("job_worked_seconds", "h", (("job", "good"),))
    now = time.monotonic()
    good.end(good.start(series, now - 2.0), series, now)
    started = time.monotonic()
    good.start(series, started)
    good.beat(NO_FIGURES)
    yield Pod(state, good, started)
    good.close()


def read_now(pod: Pod) -> tuple[JournalSnapshot, float]:
    now = time.monotonic()
    return read_totals(pod.state, now=now), now


def assert_healthy_unharmed(pod: Pod, snapshot: JournalSnapshot, now: float) -> None:
    assert pod.healthy_value(snapshot) == pytest.approx(pod.expected_healthy(now), abs=1e-6)
    assert str(pod.good.path) in {w.journal for w in snapshot.writers}
    assert str(pod.good.path) not in snapshot.skipped
    assert all(math.isfinite(s.value) and s.value >= 0 for s in snapshot.series)


def victim_series(snapshot: JournalSnapshot) -> list[float]:
    return [s.value for s in snapshot.series if s.labels == (("job", "victim"),)]


def archive_of(pod: Pod) -> dict[str, object]:
    path = pod.state / ARCHIVE_NAME
    return json.loads(path.read_text()) if path.exists() else {"series": []}


def archived_victim(pod: Pod) -> list[int]:
    return [s["nanoseconds"] for s in archive_of(pod)["series"]  # type: ignore[index, union-attr]
            if s["labels"] == [["job", "victim"]]]  # type: ignore[index]


@pytest.mark.parametrize("start", [1e308, math.inf, -1e290, -1e12, math.nan])
def test_a_dead_journal_with_impossible_in_flight_starts_is_skipped_and_never_archived(pod: Pod, start: float) -> None:
    _, path = pod.victim(start_offsets=(-1.0, -1.0))
    forge_file(path, "slot", "start", start, index=1)
    forge_file(path, "slot", "start", start, index=2)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(path),)
    assert victim_series(snapshot) == []
    assert archived_victim(pod) == []
    assert path.exists()  # kept: never folded, so never counted


@pytest.mark.parametrize(("offset", "alive"), [(60.0, True), (60.0, False), (-1e6, True)])
def test_an_in_flight_start_in_the_future_or_before_the_journal_existed_is_corrupt(pod: Pod, offset: float,
                                                                                    alive: bool) -> None:
    victim, path = pod.victim(alive=alive, start_offsets=(offset,))
    try:
        snapshot, now = read_now(pod)
        assert_healthy_unharmed(pod, snapshot, now)
        assert snapshot.skipped == (str(path),)
        assert victim_series(snapshot) == []
    finally:
        victim.close()


def test_a_start_taken_a_little_before_its_journal_existed_is_a_writer_s(pod: Pod) -> None:
    """A starved process reads a trace's start, then creates its journal seconds later: still plausible."""
    victim, _ = pod.victim(alive=True, start_offsets=(-10.0,))
    try:
        snapshot, now = read_now(pod)
        assert_healthy_unharmed(pod, snapshot, now)
        assert snapshot.skipped == ()
        assert victim_series(snapshot) == [pytest.approx(1.0 + 10.0, abs=0.5)]
    finally:
        victim.close()


@pytest.mark.parametrize("total", [1e300, math.inf, math.nan, -1.0, 1e7])
def test_a_series_total_no_writer_could_have_reached_is_corrupt(pod: Pod, total: float) -> None:
    """1e7 s is finite but more than the journal's age allows with the one slot it ever used."""
    _, path = pod.victim()
    forge_every_copy(path, "series", "total", total)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(path),)
    assert archived_victim(pod) == []


@pytest.mark.parametrize(("field", "value"), [("alive_at", math.nan), ("alive_at", math.inf), ("alive_at", 1e300),
                                              ("stall_seconds", math.inf), ("progress_at", -5.0)])
def test_a_heartbeat_with_impossible_times_is_corrupt(pod: Pod, field: str, value: float) -> None:
    _, path = pod.victim()
    forge_every_copy(path, "heartbeat", field, value)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(path),)
    assert archived_victim(pod) == []


def test_a_corrupt_live_journal_still_counts_as_a_live_process(pod: Pod) -> None:
    """Its lock says a process is there; losing its numbers must not read as "that app exited"."""
    victim, path = pod.victim(alive=True)
    try:
        forge_every_copy(path, "heartbeat", "alive_at", math.nan)
        snapshot, now = read_now(pod)
        assert_healthy_unharmed(pod, snapshot, now)
        [planted] = [w for w in snapshot.writers if w.journal == str(path)]
        assert planted.pid == os.getpid() and planted.heartbeat is None and planted.inflight == 0
        assert snapshot.skipped == (str(path),)
    finally:
        victim.close()


def test_reader_observation_times_in_the_future_are_corrupt(pod: Pod) -> None:
    """A forged "seen alive until" would close a dead writer's traces far in the future."""
    _, path = pod.victim(start_offsets=(-1.0,))
    forge_every_copy(path, "observed", "seq", 5)
    forge_every_copy(path, "observed", "observed_at", time.monotonic() + 1e9)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(path),) and archived_victim(pod) == []


def test_a_header_whose_pid_is_not_the_file_name_s_is_corrupt(pod: Pod) -> None:
    _, path = pod.victim()
    forge_file(path, "header", "pid", os.getpid() + 1)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(path),)


def test_a_deeply_nested_series_descriptor_is_corrupt_not_a_crash(pod: Pod) -> None:
    _, path = pod.victim()
    raw = b"[" * 100_000 + b"]" * 100_000
    raw = raw[: 200_000]
    with open(path, "r+b") as f:
        f.seek(DESC_OFFSET)
        f.write(DESC_HEAD.pack(len(raw), crc(raw)) + raw)
    forge_every_copy(path, "counters", "desc_used", DESC_HEAD.size + len(raw))
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(path),)


def test_a_symlink_to_a_live_journal_is_not_counted_twice(pod: Pod) -> None:
    link = pod.state / pod.good.path.name.replace(".cj", "0.cj")
    link.symlink_to(pod.good.path.name)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert len(snapshot.writers) == 1
    assert snapshot.skipped == (str(link),)


def test_a_hard_link_is_read_once_and_folded_once_with_all_its_names(pod: Pod) -> None:
    _, path = pod.victim()
    alias = pod.state / path.name.replace(".cj", "0.cj")
    os.link(path, alias)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert victim_series(snapshot) == [pytest.approx(1.0)]
    assert archived_victim(pod) == [pytest.approx(1e9, abs=1e3)]
    assert not path.exists() and not alias.exists()
    again, _ = read_now(pod)
    assert victim_series(again) == [pytest.approx(1.0)]


def _finishes(read: threading.Thread, seconds: float = 10.0) -> bool:
    read.start()
    read.join(seconds)
    return not read.is_alive()


@pytest.mark.parametrize("name", ["journal-1-2-ab.cj", ARCHIVE_NAME, ARCHIVE_LOCK_NAME, ".journal-1-ab.tmp"])
def test_a_fifo_anywhere_never_blocks_the_reader(pod: Pod, name: str) -> None:
    fifo = pod.state / name
    os.mkfifo(fifo, 0o444)
    results: list[JournalSnapshot] = []
    reader = threading.Thread(target=lambda: results.append(read_totals(pod.state, now=time.monotonic())),
                              daemon=True)
    try:
        assert _finishes(reader), f"read_totals blocked on a FIFO named {name}"
    finally:
        if reader.is_alive():  # unblock it so the test run can end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    [snapshot] = results
    assert_healthy_unharmed(pod, snapshot, snapshot.now)
    if name != ".journal-1-ab.tmp":  # a temporary file that is not ours is simply not read
        assert snapshot.skipped == (str(fifo),)


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null", "/dev/urandom", "/proc/self/mem", "missing"])
def test_symlinks_to_devices_or_nowhere_cost_that_name(pod: Pod, target: str) -> None:
    link = pod.state / "journal-5-6-cd.cj"
    link.symlink_to(target)
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert snapshot.skipped == (str(link),)


def test_a_directory_truncated_empty_and_oversized_files(pod: Pod) -> None:
    _, whole = pod.victim()
    data = whole.read_bytes()
    planted = {
        "journal-7-1-aa.cj": b"",
        "journal-7-2-aa.cj": data[:5000],
        "journal-7-3-aa.cj": b"\xff" * 4096,
    }
    for name, content in planted.items():
        (pod.state / name).write_bytes(content)
    (pod.state / "journal-7-4-aa.cj").mkdir()
    oversized = pod.state / whole.name.replace(".cj", "1.cj")
    os.rename(whole, oversized)  # a valid journal with a gigabyte of trailing bytes: read as the journal it is
    with open(oversized, "r+b") as f:
        f.truncate(FILE_SIZE + (1 << 30))
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    expected = {str(pod.state / n) for n in [*planted, "journal-7-4-aa.cj"]}
    assert set(snapshot.skipped) == expected and len(snapshot.skipped) == len(expected)
    assert victim_series(snapshot) == [pytest.approx(1.0)]  # the oversized one, folded as what it is


def test_thousands_of_bad_files_are_each_skipped_once_with_one_warning(pod: Pod,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    for i in range(3000):
        (pod.state / f"journal-{i}-1-ee.cj").write_bytes(b"x" * (i % 50))
    for _ in range(3):
        snapshot, now = read_now(pod)
        assert_healthy_unharmed(pod, snapshot, now)
        assert len(snapshot.skipped) == len(set(snapshot.skipped)) == 3000
    warned = [r for r in caplog.records if "journal-" in r.getMessage() and "-1-ee.cj" in r.getMessage()]
    assert len(warned) == 3000


def test_a_planted_archive_or_archive_lock_costs_folding_not_counts(pod: Pod) -> None:
    _, path = pod.victim()
    (pod.state / ARCHIVE_LOCK_NAME).symlink_to("/dev/zero")
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert victim_series(snapshot) == [pytest.approx(1.0)]  # counted in place, not folded
    assert path.exists() and str(pod.state / ARCHIVE_LOCK_NAME) in snapshot.skipped
    (pod.state / ARCHIVE_LOCK_NAME).unlink()
    (pod.state / ARCHIVE_NAME).write_text(json.dumps({"version": 1, "folded": [], "series": [
        {"name": "job_worked_seconds", "documentation": "h", "labels": [["job", "x"]], "nanoseconds": 10**40}]}))
    snapshot, now = read_now(pod)
    assert_healthy_unharmed(pod, snapshot, now)
    assert victim_series(snapshot) == [pytest.approx(1.0)]
    assert snapshot.skipped == (str(pod.state / ARCHIVE_NAME),)


def test_a_state_directory_that_cannot_be_listed_raises_instead_of_reading_as_no_writers(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "state"
    not_a_directory.write_text("")
    with pytest.raises(NotADirectoryError):
        read_totals(not_a_directory)
    assert fold_dead_writers(not_a_directory) == 0
    assert read_totals(tmp_path / "absent").writers == ()  # no directory at all: nothing can be writing there


def test_no_counter_goes_backwards_when_a_counted_journal_turns_corrupt(pod: Pod) -> None:
    victim, path = pod.victim(alive=True, start_offsets=(-1.0,))
    try:
        first = read_totals(pod.state)
        [before] = victim_series(first)
        forge_every_copy(path, "series", "total", math.nan)
        second = read_totals(pod.state)
        assert victim_series(second) == [before]
        assert second.skipped == (str(path),)
    finally:
        victim.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_files_the_reader_may_not_write_or_open_cost_themselves() -> None:
    """For a reader without DAC override (a sidecar running as another user): a journal of mode 000, and a
    FIFO of mode 0444 named like a journal (read-write is refused, so a read-only open is tried: it must
    not wait for a writer)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="candor-mode000-"))  # pytest's own tmp tree is private to root
    try:
        top.chmod(0o755)
        state = top / "state"
        good = JournalWriter(state)
        good.series_index("job_worked_seconds", "h", (("job", "good"),))
        state.chmod(0o777)
        victim = JournalWriter(state)
        victim.series_index("job_worked_seconds", "h", (("job", "victim"),))
        victim.close()
        victim.path.chmod(0o000)
        fifo = state / "journal-9-9-ab.cj"
        os.mkfifo(fifo, 0o444)
        code = ("import os, sys, time; from candor_tracer.journal.reader import read_totals;"
                "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534);"
                "s = read_totals(sys.argv[1], now=time.monotonic());"
                "print(len(s.writers), list(s.skipped), sorted(x.labels[0][1] for x in s.series))")
        result = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True, timeout=30,
                                env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "tracer")})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"1 {sorted([str(victim.path), str(fifo)])!r} ['good']"
        good.close()
    finally:
        shutil.rmtree(top)
