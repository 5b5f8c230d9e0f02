"""Decoding one journal file (see journal.format) into series, totals, in-flight slots and the heartbeat."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import cast

from candor_tracer.journal.format import (
    ACTIVE,
    DESC_HEAD,
    DESC_OFFSET,
    ENDING,
    FIRST_PAGE,
    FREE,
    SERIES_OFFSET,
    SERIES_STRIDE,
    SLOT,
    SLOT_STATE_OFFSET,
    SLOTS_OFFSET,
    Header,
    Heartbeat,
    JournalFormatError,
    LoadRecord,
    crc,
    pad8,
    unpack_counters,
    unpack_header,
    unpack_heartbeat,
    unpack_load,
    unpack_observed,
    unpack_series,
)

# A live writer applies a trace end in microseconds; a reader that keeps catching it mid-update
# gives up after this many tries and relies on the ENDING-slot rule (and the caller's clamp).
LIVE_READ_ATTEMPTS = 8
# How far a writer's times may lie outside [its journal's creation, now]. After now: a live writer may write
# while we read. Before the creation: the first trace's start is read before its journal is created (a
# starved process may take a while), and a reader records the time it took before waiting for the archive
# lock. Generous on that side: a genuine journal judged corrupt would lose all of a process's seconds,
# while the slack bounds what a forged start can add to a minute per slot.
CLOCK_SLACK = 2.0
CREATION_SLACK = 60.0


@dataclass(frozen=True)
class SeriesDesc:
    name: str
    documentation: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Slots:
    """The ACTIVE and ENDING slots of a journal, as columns (a live journal may hold thousands)."""

    states: bytes
    series: list[int]
    starts: list[float]
    ends: list[float]
    targets: list[int]


NO_SLOTS = Slots(b"", [], [], [], [])


def _decode_slots(data: bytes) -> Slots:
    """Every slot below the high-water mark, FREE ones included (check_plausible drops those)."""
    if not data:
        return NO_SLOTS
    states = data[SLOT_STATE_OFFSET:: SLOT.size]
    if sys.byteorder == "little":  # columns straight from the bytes: no per-slot Python work
        view = memoryview(data)
        doubles = view.cast("d")
        return Slots(states=states, series=view.cast("I")[6::8].tolist(),
                     starts=cast(list[float], doubles[0::4].tolist()), ends=cast(list[float], doubles[1::4].tolist()),
                     targets=view.cast("Q")[2::4].tolist())
    rows = list(SLOT.iter_unpack(data))
    return Slots(states=states, series=[r[3] for r in rows], starts=[r[0] for r in rows],
                 ends=[r[1] for r in rows], targets=[r[2] for r in rows])


@dataclass(frozen=True)
class JournalReading:
    header: Header
    heartbeat: Heartbeat
    observed_seq: int
    observed_at: float | None
    descs: tuple[SeriesDesc, ...]
    commits: tuple[int, ...]
    totals: tuple[float, ...]
    slots: Slots
    slot_hwm: int = 0  # slots the writer ever had in use at once (bounds its completed seconds)
    load: LoadRecord | None = None  # None: a writer of before load records, or a record out of bounds

    def active_starts(self) -> list[float]:
        if ENDING not in self.slots.states:
            return self.slots.starts
        return [start for state, start in zip(self.slots.states, self.slots.starts, strict=True) if state == ACTIVE]


def _decode_desc(raw: bytes) -> SeriesDesc:
    try:
        doc = json.loads(raw)
        name, help_text, labels = doc["n"], doc["h"], doc["l"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nesting a writer never makes
        raise JournalFormatError(f"bad series descriptor: {type(exc).__name__}") from None
    if not isinstance(name, str) or not isinstance(help_text, str) or not isinstance(labels, list):
        raise JournalFormatError("bad series descriptor: wrong field types")
    pairs: list[tuple[str, str]] = []
    for pair in labels:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise JournalFormatError("bad series descriptor: labels must be [name, value] pairs")
        pairs.append((pair[0], pair[1]))
    return SeriesDesc(name=name, documentation=help_text, labels=tuple(pairs))


def _decode_descs(data: bytes, count: int) -> tuple[SeriesDesc, ...]:
    descs: list[SeriesDesc] = []
    pos = 0
    for _ in range(count):
        if pos + DESC_HEAD.size > len(data):
            raise JournalFormatError("series descriptors truncated")
        length, check = DESC_HEAD.unpack_from(data, pos)
        raw = data[pos + DESC_HEAD.size: pos + DESC_HEAD.size + length]
        if len(raw) != length or crc(raw) != check:
            raise JournalFormatError("series descriptor checksum mismatch")
        descs.append(_decode_desc(raw))
        pos += pad8(DESC_HEAD.size + length)
    return tuple(descs)


# Descriptors are append-only: decode each journal's once per (file, creation, size).
_desc_cache: dict[tuple[int, int, float, int], tuple[SeriesDesc, ...]] = {}
_desc_lock = threading.Lock()


def _descs(fd: int, header: Header, count: int, used: int) -> tuple[SeriesDesc, ...]:
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, header.created_mono, count)
    with _desc_lock:
        cached = _desc_cache.get(key)
    if cached is not None:
        return cached
    data = _pread_exact(fd, used, DESC_OFFSET)
    descs = _decode_descs(data, count)
    with _desc_lock:
        if len(_desc_cache) > 4096:
            _desc_cache.clear()
        _desc_cache[key] = descs
    return descs


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset) if size else b""
    if len(data) != size:
        raise JournalFormatError("file truncated")
    return data


def _read_once(fd: int) -> tuple[bytes, JournalReading, bytes]:
    """One pass over the file; the first and last element (series records, then slots, read twice) are
    equal when no writer changed them while we read."""
    page = _pread_exact(fd, FIRST_PAGE, 0)
    header = unpack_header(page)
    counters = unpack_counters(page)
    heartbeat = unpack_heartbeat(page)
    observed_seq, observed_at = unpack_observed(page)
    descs = _descs(fd, header, counters.series_count, counters.desc_used)
    series_size = counters.series_count * SERIES_STRIDE
    slots_size = counters.slot_hwm * SLOT.size
    series_before = _pread_exact(fd, series_size, SERIES_OFFSET)
    slot_data = _pread_exact(fd, slots_size, SLOTS_OFFSET)
    series_after = _pread_exact(fd, series_size, SERIES_OFFSET)
    # Slots a second time: a slot read while the writer filled it (its fields before, its state byte after the
    # write) shows a start that is not its own; two equal reads cannot both be torn that way.
    slots_again = _pread_exact(fd, slots_size, SLOTS_OFFSET)
    commits: list[int] = []
    totals: list[float] = []
    for i in range(counters.series_count):
        commit, total = unpack_series(series_before, i * SERIES_STRIDE)
        commits.append(commit)
        totals.append(total)
    reading = JournalReading(header=header, heartbeat=heartbeat, observed_seq=observed_seq,
                             observed_at=observed_at, descs=descs, commits=tuple(commits),
                             totals=tuple(totals), slots=_decode_slots(slot_data), slot_hwm=counters.slot_hwm,
                             load=unpack_load(page))
    return series_before + slot_data, reading, series_after + slots_again


def read_journal(fd: int, live: bool, now: float | None = None) -> JournalReading:
    """Decode the journal open at `fd` and check that every value is one a writer can have written.

    `now` is the current CLOCK_MONOTONIC time (default: read it), the bound for "not in the future". For a
    live writer, retry until no trace start or end overlapped the read; when a busy writer keeps catching
    us, the last reading is used and slots that could be half-written are left out. Raises
    JournalFormatError naming the first problem: bytes no writer writes make the whole journal corrupt.
    """
    attempts = LIVE_READ_ATTEMPTS if live else 1
    settled = False
    reading: JournalReading | None = None
    for attempt in range(attempts):
        before, reading, after = _read_once(fd)
        if before == after:
            settled = True
            break
        time.sleep(0.0001 * (attempt + 1))
    assert reading is not None
    return check_plausible(reading, time.monotonic() if now is None else now, settled or not live)


def _bounded(what: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:  # False for NaN too
        raise JournalFormatError(f"{what} {value!r} is not within [{low:.3f}, {high:.3f}]")


def check_plausible(reading: JournalReading, now: float, settled: bool = True) -> JournalReading:
    """`reading` with only in-use slots, or JournalFormatError when a value cannot be a writer's.

    A writer's times are CLOCK_MONOTONIC readings between its journal's creation and now (give or take
    CREATION_SLACK and CLOCK_SLACK), and its completed seconds cannot exceed the journal's age times the
    slots it ever had in use at once.
    `settled`: False when a live writer kept changing the slots during every read; then a slot outside
    the bounds may be one caught half-written, and only that slot is left out.
    """
    header, hb = reading.header, reading.heartbeat
    _bounded("creation time", header.created_mono, 0.0, now + CLOCK_SLACK)
    if not math.isfinite(header.created_wall):
        raise JournalFormatError(f"creation wall-clock time {header.created_wall!r} is not a finite number")
    low, high = max(header.created_mono - CREATION_SLACK, 0.0), now + CLOCK_SLACK
    _bounded("heartbeat time", hb.alive_at, low, high)
    for what, value in (("progress time", hb.progress_at), ("stall time", hb.stall_at),
                        ("loop turn time", hb.loop_turned_at), ("observation time", reading.observed_at)):
        if value is not None:
            _bounded(what, value, low, high)
    if hb.stall_seconds is not None:
        _bounded("stall length", hb.stall_seconds, 0.0, high - low)
    if reading.load is not None and not low <= reading.load.read_at <= high:
        reading = replace(reading, load=None)  # advisory: a bad load record costs the load figures only
    completed = sum(reading.totals)  # each total is finite and >= 0 (unpack_series)
    _bounded("completed seconds", completed, 0.0, (high - low) * max(reading.slot_hwm, 1))
    slots = reading.slots
    series_count = len(reading.totals)
    states = slots.states
    if not states:
        return reading
    starts = slots.starts
    total_start = sum(starts)  # finite only when no start is NaN or infinite
    if (states.count(ACTIVE) == len(states) and -math.inf < total_start < math.inf and min(starts) >= low
            and max(starts) <= high and max(slots.series) < series_count):  # the usual case, checked in C
        return reading
    keep: list[int] = []
    for i, (state, series, start, end) in enumerate(zip(states, slots.series, starts, slots.ends, strict=True)):
        if state == FREE:
            continue
        problem = ""
        if state not in (ACTIVE, ENDING):
            problem = f"state byte {state}"
        elif series >= series_count:
            problem = f"series index {series} of {series_count}"
        elif not low <= start <= high:
            problem = f"start {start!r} outside [{low:.3f}, {high:.3f}]"
        elif state == ENDING and not low <= end <= high:
            problem = f"end {end!r} outside [{low:.3f}, {high:.3f}]"
        if problem and settled:
            raise JournalFormatError(f"in-flight slot {i}: {problem}")
        if not problem:
            keep.append(i)
    if len(keep) == len(states):
        return reading
    return replace(reading, slots=Slots(states=bytes(states[i] for i in keep), series=[slots.series[i] for i in keep],
                                        starts=[starts[i] for i in keep], ends=[slots.ends[i] for i in keep],
                                        targets=[slots.targets[i] for i in keep]))


def to_ns(seconds: float) -> int:
    """Seconds as integer nanoseconds, the same for the same float every time (sums of ints are exact)."""
    return int(seconds * 1e9)


def series_values(reading: JournalReading, close_at: float) -> list[int]:
    """Nanoseconds per series: completed + ACTIVE traces up to `close_at` + ENDING traces not yet applied.

    Takes a reading that passed check_plausible (every number finite and bounded). Integer arithmetic: a
    reader that folds this journal later, or sums journals in another order, gets exactly the same
    numbers, so a reported total can never shrink by a rounding error.
    """
    values = [to_ns(t) for t in reading.totals]
    slots = reading.slots
    if not slots.states:
        return values
    close_ns = to_ns(close_at)
    if (len(values) == 1 and slots.states.count(ACTIVE) == len(slots.states)
            and max(slots.starts) <= close_at):  # one series, all in flight: the common case, kept cheap
        values[0] += len(slots.starts) * close_ns - sum([int(start * 1e9) for start in slots.starts])
        return values
    commits = reading.commits
    for state, series, start, end, target in zip(slots.states, slots.series, slots.starts, slots.ends, slots.targets,
                                                 strict=True):
        if state == ACTIVE:
            started = to_ns(start)
            if close_ns > started:
                values[series] += close_ns - started
        elif state == ENDING and commits[series] < target and end > start:
            values[series] += to_ns(end) - to_ns(start)
    return values
