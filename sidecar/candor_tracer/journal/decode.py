"""Decoding one journal file (see journal.format) into series, totals, in-flight slots and the heartbeat."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import cast

from candor_tracer.journal.format import (
    ACTIVE,
    DESC_HEAD,
    DESC_OFFSET,
    ENDING,
    FIRST_PAGE,
    SERIES_OFFSET,
    SERIES_STRIDE,
    SLOT,
    SLOT_STATE_OFFSET,
    SLOTS_OFFSET,
    Header,
    Heartbeat,
    JournalFormatError,
    crc,
    pad8,
    unpack_counters,
    unpack_header,
    unpack_heartbeat,
    unpack_observed,
    unpack_series,
)

# A live writer applies a trace end in microseconds; a reader that keeps catching it mid-update
# gives up after this many tries and relies on the ENDING-slot rule (and the caller's clamp).
LIVE_READ_ATTEMPTS = 8


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


def _decode_slots(data: bytes, series_count: int) -> Slots:
    if not data:
        return NO_SLOTS
    states = data[SLOT_STATE_OFFSET:: SLOT.size]
    if sys.byteorder == "little":  # columns straight from the bytes: no per-slot Python work
        view = memoryview(data)
        doubles = view.cast("d")
        slots = Slots(states=states, series=view.cast("I")[6::8].tolist(),
                      starts=cast(list[float], doubles[0::4].tolist()), ends=cast(list[float], doubles[1::4].tolist()),
                      targets=view.cast("Q")[2::4].tolist())
    else:
        rows = list(SLOT.iter_unpack(data))
        slots = Slots(states=states, series=[r[3] for r in rows], starts=[r[0] for r in rows],
                      ends=[r[1] for r in rows], targets=[r[2] for r in rows])
    if (states.count(ACTIVE) == len(states) and max(slots.series) < series_count
            and math.fsum(slots.starts) == math.fsum(slots.starts)):  # the usual case, checked in C: all valid
        return slots
    valid = [i for i, (state, series, start) in enumerate(zip(states, slots.series, slots.starts, strict=True))
             if state in (ACTIVE, ENDING) and series < series_count and start == start]  # start == start: not NaN
    return Slots(states=bytes(states[i] for i in valid), series=[slots.series[i] for i in valid],
                 starts=[slots.starts[i] for i in valid], ends=[slots.ends[i] for i in valid],
                 targets=[slots.targets[i] for i in valid])


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

    def active_starts(self) -> list[float]:
        if ENDING not in self.slots.states:
            return self.slots.starts
        return [start for state, start in zip(self.slots.states, self.slots.starts, strict=True) if state == ACTIVE]


def _decode_desc(raw: bytes) -> SeriesDesc:
    try:
        doc = json.loads(raw)
        name, help_text, labels = doc["n"], doc["h"], doc["l"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise JournalFormatError(f"bad series descriptor: {exc}") from None
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
    page = _pread_exact(fd, FIRST_PAGE, 0)
    header = unpack_header(page)
    counters = unpack_counters(page)
    heartbeat = unpack_heartbeat(page)
    observed_seq, observed_at = unpack_observed(page)
    descs = _descs(fd, header, counters.series_count, counters.desc_used)
    series_size = counters.series_count * SERIES_STRIDE
    series_before = _pread_exact(fd, series_size, SERIES_OFFSET)
    slot_data = _pread_exact(fd, counters.slot_hwm * SLOT.size, SLOTS_OFFSET)
    series_after = _pread_exact(fd, series_size, SERIES_OFFSET)
    commits: list[int] = []
    totals: list[float] = []
    for i in range(counters.series_count):
        commit, total = unpack_series(series_before, i * SERIES_STRIDE)
        commits.append(commit)
        totals.append(total)
    slots = _decode_slots(slot_data, counters.series_count)
    reading = JournalReading(header=header, heartbeat=heartbeat, observed_seq=observed_seq,
                             observed_at=observed_at, descs=descs, commits=tuple(commits),
                             totals=tuple(totals), slots=slots)
    return series_before, reading, series_after


def read_journal(fd: int, live: bool) -> JournalReading:
    """Decode the journal open at `fd`. For a live writer, retry until no trace end overlapped the read."""
    attempts = LIVE_READ_ATTEMPTS if live else 1
    reading: JournalReading | None = None
    for attempt in range(attempts):
        before, reading, after = _read_once(fd)
        if before == after:
            return reading
        time.sleep(0.0001 * (attempt + 1))
    assert reading is not None
    return reading


def to_ns(seconds: float) -> int:
    """Seconds as integer nanoseconds, the same for the same float every time (sums of ints are exact)."""
    return int(seconds * 1e9)


def series_values(reading: JournalReading, close_at: float) -> list[int]:
    """Nanoseconds per series: completed + ACTIVE traces up to `close_at` + ENDING traces not yet applied.

    Integer arithmetic: a reader that folds this journal later, or sums journals in another order, gets
    exactly the same numbers, so a reported total can never shrink by a rounding error.
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
