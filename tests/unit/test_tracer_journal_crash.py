"""A SIGKILL can land between any two stores of a journal update: every such image must read consistently.

The real-signal tests (tests/integration/test_tracer_journal.py) kill at one moment each; here every
store the writer makes is recorded, and the journal is rebuilt as it would be after a kill before, after
or in the middle of each store (a store of several bytes may be torn in any order), then read as a dead
writer's journal. The total must be either the value before the update or the value after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from candor_tracer.cgroup import NO_FIGURES
from candor_tracer.journal.decode import read_journal, series_values
from candor_tracer.journal.format import SLOT, SLOTS_OFFSET
from candor_tracer.journal.writer import JournalWriter

HEARTBEAT_AT = 105.0
# The journals here are created at monotonic time CREATED and read as if at NOW, so the made-up times of
# the traces (10 s .. 105 s) are ones a real writer could have written.
CREATED = 1.0
NOW = 1000.0


def new_writer(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> JournalWriter:
    with monkeypatch.context() as patched:
        patched.setattr("candor_tracer.journal.writer.time.monotonic", lambda: CREATED)
        return JournalWriter(state_dir)


class RecordingMap:
    """Stands in front of the writer's mmap and records every store in order (then performs it)."""

    def __init__(self, mm: object) -> None:
        self.mm = mm
        self.writes: list[tuple[int, bytes]] = []

    def __setitem__(self, key: int | slice, value: int | bytes) -> None:
        if isinstance(key, slice):
            assert isinstance(value, bytes | bytearray) and key.start is not None
            self.writes.append((key.start, bytes(value)))
        else:
            assert isinstance(value, int)
            self.writes.append((key, bytes([value])))
        self.mm[key] = value  # type: ignore[index]


def torn_versions(data: bytes) -> Iterator[list[int]]:
    """Byte positions of `data` that reached memory when a kill tore the store (any order is possible)."""
    n = len(data)
    if n == 1:
        return
    yield list(range(n // 2))
    yield list(range(n // 2, n))
    yield list(range(0, n, 2))
    yield list(range(1, n, 2))
    yield list(range(1, n))
    yield list(range(n - 1))


def crash_images(before: bytes, writes: list[tuple[int, bytes]]) -> Iterator[tuple[str, bytes]]:
    image = bytearray(before)
    yield "before any store", bytes(image)
    for index, (offset, data) in enumerate(writes):
        for version, positions in enumerate(torn_versions(data)):
            torn = bytearray(image)
            for p in positions:
                torn[offset + p] = data[p]
            yield f"store {index} torn ({version})", bytes(torn)
        image[offset: offset + len(data)] = data
        yield f"after store {index}", bytes(image)


def dead_values(image: bytes, tmp: Path) -> list[float]:
    path = tmp / "image.cj"
    path.write_bytes(image)
    fd = os.open(path, os.O_RDONLY)
    try:
        reading = read_journal(fd, live=False, now=NOW)
    finally:
        os.close(fd)
    assert reading.heartbeat.alive_at == HEARTBEAT_AT
    return [ns / 1e9 for ns in series_values(reading, reading.heartbeat.alive_at)]


def used_bytes(writer: JournalWriter) -> bytes:
    return writer.path.read_bytes()[: SLOTS_OFFSET + 16 * SLOT.size]


@pytest.fixture
def writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JournalWriter]:
    w = new_writer(tmp_path / "state", monkeypatch)
    yield w
    w.close()


def record(writer: JournalWriter, operation: Callable[[], object]) -> tuple[bytes, list[tuple[int, bytes]]]:
    before = used_bytes(writer)
    recorder = RecordingMap(writer._mm)
    real = writer._mm
    writer._mm = recorder  # type: ignore[assignment]
    try:
        operation()
    finally:
        writer._mm = real
    return before, recorder.writes


def check_every_crash_point(before: bytes, writes: list[tuple[int, bytes]], allowed: list[list[float]],
                            tmp: Path) -> set[str]:
    seen: set[str] = set()
    for label, image in crash_images(before, writes):
        values = dead_values(image, tmp)
        assert values in allowed, f"{label}: read {values}, allowed {allowed}"
        seen.add(repr(values))
    return seen


@pytest.mark.parametrize("ends_before", [0, 1, 2])  # alternate series copies: the write goes to copy 0 or 1
def test_a_kill_anywhere_in_a_trace_end_counts_it_once(writer: JournalWriter, tmp_path: Path,
                                                       ends_before: int) -> None:
    series = writer.series_index("job_worked_seconds", "h", (("job", "a"),))
    for _ in range(ends_before):
        writer.end(writer.start(series, 10.0), series, 11.0)  # 1 s each
    slot = writer.start(series, 100.0)
    writer.beat(NO_FIGURES, now=HEARTBEAT_AT)
    done = float(ends_before)
    before, writes = record(writer, lambda: writer.end(slot, series, 103.0))
    assert len(writes) >= 4
    in_flight_closed_at_heartbeat = [done + 5.0]
    ended = [done + 3.0]
    seen = check_every_crash_point(before, writes, [in_flight_closed_at_heartbeat, ended], tmp_path)
    assert seen == {repr(in_flight_closed_at_heartbeat), repr(ended)}


@pytest.mark.parametrize("reuse_slot", [False, True])
def test_a_kill_anywhere_in_a_trace_start_leaves_it_absent_or_in_flight(writer: JournalWriter, tmp_path: Path,
                                                                        reuse_slot: bool) -> None:
    series = writer.series_index("job_worked_seconds", "h", (("job", "a"),))
    writer.end(writer.start(series, 10.0), series, 12.0)
    if not reuse_slot:
        writer.start(series, 104.5)  # keep slot 0 busy: the next start takes a new slot (and the counters)
    writer.beat(NO_FIGURES, now=HEARTBEAT_AT)
    busy = 0.5 if not reuse_slot else 0.0
    start = writer.start_free if reuse_slot else writer.start  # the lock-free path needs a free slot
    before, writes = record(writer, lambda: start(series, 104.0))
    absent, present = [2.0 + busy], [2.0 + busy + 1.0]
    seen = check_every_crash_point(before, writes, [absent, present], tmp_path)
    assert seen == {repr(absent), repr(present)}


def test_a_kill_anywhere_in_a_new_series_leaves_it_absent_or_empty(writer: JournalWriter, tmp_path: Path) -> None:
    first = writer.series_index("job_worked_seconds", "h", (("job", "a"),))
    writer.end(writer.start(first, 10.0), first, 12.0)
    writer.beat(NO_FIGURES, now=HEARTBEAT_AT)
    before, writes = record(writer, lambda: writer.series_index("job_worked_seconds", "h", (("job", "b"),)))
    seen = check_every_crash_point(before, writes, [[2.0], [2.0, 0.0]], tmp_path)
    assert seen == {repr([2.0]), repr([2.0, 0.0])}


def test_a_kill_anywhere_in_a_heartbeat_keeps_the_previous_or_the_new_one(writer: JournalWriter,
                                                                          tmp_path: Path) -> None:
    writer.series_index("job_worked_seconds", "h", (("job", "a"),))
    writer.beat(NO_FIGURES, now=HEARTBEAT_AT)
    before, writes = record(writer, lambda: writer.beat(NO_FIGURES, now=HEARTBEAT_AT + 1))
    beats = set()
    for _, image in crash_images(before, writes):
        path = tmp_path / "beat.cj"
        path.write_bytes(image)
        fd = os.open(path, os.O_RDONLY)
        try:
            beats.add(read_journal(fd, live=False, now=NOW).heartbeat.alive_at)
        finally:
            os.close(fd)
    assert beats == {HEARTBEAT_AT, HEARTBEAT_AT + 1}


def test_a_kill_during_the_very_first_updates_of_a_fresh_journal(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The first counters and heartbeat updates must not overwrite the only valid copy."""
    writer = new_writer(tmp_path / "fresh", monkeypatch)
    try:
        writer.beat(NO_FIGURES, now=HEARTBEAT_AT)  # the first heartbeat update after creation
        before, writes = record(writer, lambda: writer.series_index("job_worked_seconds", "h", (("job", "a"),)))
        seen = check_every_crash_point(before, writes, [[], [0.0]], tmp_path)
        assert seen == {repr([]), repr([0.0])}
    finally:
        writer.close()
    fresh = new_writer(tmp_path / "fresh2", monkeypatch)
    try:
        before, writes = record(fresh, lambda: fresh.beat(NO_FIGURES, now=HEARTBEAT_AT))
        for label, image in crash_images(before, writes):
            path = tmp_path / "first-beat.cj"
            path.write_bytes(image)
            fd = os.open(path, os.O_RDONLY)
            try:
                read_journal(fd, live=False, now=NOW)  # must not raise "both heartbeat records are corrupt"
            except Exception as exc:
                raise AssertionError(f"{label}: {exc}") from exc
            finally:
                os.close(fd)
    finally:
        fresh.close()
