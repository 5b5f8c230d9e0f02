"""Decoding one journal file (see journal_format) into series, totals, in-flight slots and the heartbeat."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

from candor_tracer.journal_format import (
    ACTIVE,
    DESC_HEAD,
    DESC_OFFSET,
    ENDING,
    FIRST_PAGE,
    SERIES_OFFSET,
    SERIES_STRIDE,
    SLOT,
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


# (start, end, target commit, series index, state) as stored; only ACTIVE and ENDING slots are kept.
Slot = tuple[float, float, int, int, int]
START, END, TARGET, SERIES_INDEX, STATE = range(5)


@dataclass(frozen=True)
class JournalReading:
    header: Header
    heartbeat: Heartbeat
    observed_seq: int
    observed_at: float | None
    descs: tuple[SeriesDesc, ...]
    commits: tuple[int, ...]
    totals: tuple[float, ...]
    slots: tuple[Slot, ...]  # ACTIVE and ENDING slots only

    def active_starts(self) -> list[float]:
        return [s[START] for s in self.slots if s[STATE] == ACTIVE]


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
    count = counters.series_count
    # state != FREE, a known series, a start that is not NaN (s[0] == s[0])
    slots = tuple(s for s in SLOT.iter_unpack(slot_data) if s[4] and s[3] < count and s[0] == s[0])
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


def series_values(reading: JournalReading, close_at: float) -> list[float]:
    """Seconds per series: completed + ACTIVE traces up to `close_at` + ENDING traces not yet applied."""
    values = list(reading.totals)
    commits = reading.commits
    for start, end, target, series, state in reading.slots:
        if state == ACTIVE:
            if close_at > start:
                values[series] += close_at - start
        elif state == ENDING and commits[series] < target and end > start:
            values[series] += end - start
    return values
