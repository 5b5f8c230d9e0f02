"""The binary layout of a trace journal, shared by the writer (the app) and the reader (the sidecar).

One sparse file per process. Everything a reader must trust after a SIGKILL at any instant is either
a single byte (slot states) or a record kept in two CRC-checked copies written alternately (a torn write
leaves the previous copy intact). The writer copies packed bytes into the map with slice assignments and
writes a slot's state byte on its own, after the rest of the slot: no ordering inside one copy is
assumed (struct.pack_into zeroes its whole record before filling it; memcpy may store in any order).
Layout (little-endian):

    0       header (written once, before the file gets its public name)
    128     counters x2: seq, series_count, slot_hwm, desc_used, crc
    256     heartbeat x2: seq, alive_at, progress_at, memory figures, stall figures, loop_turned_at, crc
    512     observed x2 (written by readers): seq, latest monotonic time a reader saw the writer alive, crc
    640     load x2: seq, read_at, CPU counters of the container's cgroup, declared capacity, crc
    4096    descriptors: [len][crc][json {"n": name, "h": help, "l": [[k, v], ...]}] padded to 8 bytes
    DESC_END series x2 per series: commit, total seconds, crc
    SLOTS   in-flight slots: start, end, target commit, series index, state byte (written last)

A trace end marks its slot ENDING (with end time and the series commit it will produce), writes the
series total, then frees the slot: a reader of a dead journal adds an ENDING slot only when the series
record has not reached its target commit, so nothing is lost or counted twice. A reader of a live
journal reads the series records before and after the slots and retries when a commit moved.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"CANDORJ1"
VERSION = 1

MAX_SERIES = 1024
MAX_SLOTS = 65536
DESC_OFFSET = 4096
DESC_SIZE = 256 * 1024

HEADER = struct.Struct("<8sIIQddIIII")  # magic, version, pid, starttime, created_mono, created_wall, caps, crc
HEADER_BODY = struct.Struct("<8sIIQddIII")
HEADER_OFFSET = 0

COUNTERS = struct.Struct("<QIIII")  # seq, series_count, slot_hwm, desc_used, crc
COUNTERS_BODY = struct.Struct("<QIII")
COUNTERS_OFFSET = 128

# seq, alive_at, progress_at, memory_current, memory_max, inactive_file, stall_at, stall_seconds,
# loop_turned_at, crc, pad. NaN / -1 mean "none".
HEARTBEAT = struct.Struct("<QddqqqdddI4x")
HEARTBEAT_BODY = struct.Struct("<Qddqqqddd")
HEARTBEAT_OFFSET = 256

# Readers record the latest time they saw the writer alive (its lock held) and reported in-flight time up
# to: a later fold closes in-flight traces no earlier than that, so a reported total never shrinks.
OBSERVED = struct.Struct("<QdI4x")  # seq, observed_at, crc
OBSERVED_BODY = struct.Struct("<Qd")
OBSERVED_OFFSET = 512
FIRST_PAGE = 4096

# seq, read_at, cpu usage ns, periods, throttled periods, throttled ns, quota cores, PSI some avg10, online
# cores, cgroup id, declared capacity, crc, pad. NaN / -1 mean "none"; seq 0 (never written) means no record.
LOAD = struct.Struct("<QdqqqqddqQqI4x")
LOAD_BODY = struct.Struct("<QdqqqqddqQq")
LOAD_OFFSET = 640

DESC_HEAD = struct.Struct("<II")  # length, crc of the json bytes

SERIES = struct.Struct("<QdI4x")  # commit, total, crc
SERIES_BODY = struct.Struct("<Qd")
SERIES_OFFSET = DESC_OFFSET + DESC_SIZE
SERIES_STRIDE = 2 * SERIES.size

SLOT = struct.Struct("<ddQI3xB")  # start, end, target commit, series index, state (last byte)
SLOT_FIELDS = struct.Struct("<ddQI")  # start .. series index: written before the state byte
SLOT_END_FIELDS = struct.Struct("<dQ")  # end, target commit
SLOT_END_OFFSET = 8
SLOTS_OFFSET = SERIES_OFFSET + MAX_SERIES * SERIES_STRIDE
SLOT_STATE_OFFSET = SLOT.size - 1
FILE_SIZE = SLOTS_OFFSET + MAX_SLOTS * SLOT.size

FREE = 0
ACTIVE = 1
ENDING = 2

JOURNAL_PREFIX = "journal-"
JOURNAL_SUFFIX = ".cj"
JOURNAL_NAME = re.compile(r"^journal-(\d+)-(\d+)-([0-9a-f]+)\.cj$")
TEMP_PREFIX = ".journal-"
ARCHIVE_NAME = "archive.json"
ARCHIVE_LOCK_NAME = "archive.lock"

NONE_INT = -1


class JournalFormatError(ValueError):
    """The bytes are not a journal this version can read."""


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def journal_name(pid: int, starttime: int, nonce: str) -> str:
    return f"{JOURNAL_PREFIX}{pid}-{starttime}-{nonce}{JOURNAL_SUFFIX}"


def series_offset(index: int, copy: int) -> int:
    return SERIES_OFFSET + index * SERIES_STRIDE + copy * SERIES.size


def slot_offset(index: int) -> int:
    return SLOTS_OFFSET + index * SLOT.size


def opt_float(value: float | None) -> float:
    return math.nan if value is None else value


def from_opt_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def opt_int(value: int | None) -> int:
    return NONE_INT if value is None else value


def from_opt_int(value: int) -> int | None:
    return None if value < 0 else value


@dataclass(frozen=True)
class Header:
    pid: int
    starttime: int
    created_mono: float
    created_wall: float


def pack_header(header: Header) -> bytes:
    body = HEADER_BODY.pack(MAGIC, VERSION, header.pid, header.starttime, header.created_mono,
                            header.created_wall, MAX_SERIES, MAX_SLOTS, DESC_SIZE)
    return body + struct.pack("<I", crc(body))


def unpack_header(data: bytes) -> Header:
    if len(data) < HEADER.size:
        raise JournalFormatError("truncated header")
    magic, version, pid, starttime, mono, wall, max_series, max_slots, desc_size, check = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise JournalFormatError("bad magic (not a Candor journal)")
    if check != crc(data[: HEADER_BODY.size]):
        raise JournalFormatError("header checksum mismatch")
    if version != VERSION:
        raise JournalFormatError(f"unsupported journal version {version}")
    if (max_series, max_slots, desc_size) != (MAX_SERIES, MAX_SLOTS, DESC_SIZE):
        raise JournalFormatError("unexpected journal capacities")
    return Header(pid=pid, starttime=starttime, created_mono=mono, created_wall=wall)


@dataclass(frozen=True)
class Counters:
    seq: int
    series_count: int
    slot_hwm: int
    desc_used: int


def pack_counters(c: Counters) -> bytes:
    body = COUNTERS_BODY.pack(c.seq, c.series_count, c.slot_hwm, c.desc_used)
    return body + struct.pack("<I", crc(body))


def _unpack_counters_copy(data: bytes, offset: int) -> Counters | None:
    seq, count, hwm, used, check = COUNTERS.unpack_from(data, offset)
    if check != crc(data[offset: offset + COUNTERS_BODY.size]):
        return None  # torn: the other copy holds the previous state
    if count > MAX_SERIES or hwm > MAX_SLOTS or used > DESC_SIZE:  # no writer writes that: not torn, forged
        raise JournalFormatError(f"counters beyond the journal's capacity ({count} series, {hwm} slots, "
                                 f"{used} descriptor bytes)")
    return Counters(seq=seq, series_count=count, slot_hwm=hwm, desc_used=used)


def unpack_counters(data: bytes) -> Counters:
    """The newest valid copy; both copies torn means the journal is corrupt."""
    copies = [c for c in (_unpack_counters_copy(data, COUNTERS_OFFSET),
                          _unpack_counters_copy(data, COUNTERS_OFFSET + COUNTERS.size)) if c is not None]
    if not copies:
        raise JournalFormatError("both counter records are corrupt")
    return max(copies, key=lambda c: c.seq)


@dataclass(frozen=True)
class Heartbeat:
    seq: int
    alive_at: float
    progress_at: float | None
    memory_current: int | None
    memory_max: int | None
    inactive_file: int | None
    stall_at: float | None
    stall_seconds: float | None
    loop_turned_at: float | None


def pack_heartbeat(h: Heartbeat) -> bytes:
    body = HEARTBEAT_BODY.pack(h.seq, h.alive_at, opt_float(h.progress_at), opt_int(h.memory_current),
                               opt_int(h.memory_max), opt_int(h.inactive_file), opt_float(h.stall_at),
                               opt_float(h.stall_seconds), opt_float(h.loop_turned_at))
    return body + struct.pack("<I4x", crc(body))


def _unpack_heartbeat_copy(data: bytes, offset: int) -> Heartbeat | None:
    seq, alive, progress, cur, mx, inactive, stall_at, stall_s, turned, check = HEARTBEAT.unpack_from(data, offset)
    if check != crc(data[offset: offset + HEARTBEAT_BODY.size]) or seq == 0:
        return None
    return Heartbeat(seq=seq, alive_at=alive, progress_at=from_opt_float(progress),
                     memory_current=from_opt_int(cur), memory_max=from_opt_int(mx),
                     inactive_file=from_opt_int(inactive), stall_at=from_opt_float(stall_at),
                     stall_seconds=from_opt_float(stall_s), loop_turned_at=from_opt_float(turned))


def unpack_heartbeat(data: bytes) -> Heartbeat:
    copies = [h for h in (_unpack_heartbeat_copy(data, HEARTBEAT_OFFSET),
                          _unpack_heartbeat_copy(data, HEARTBEAT_OFFSET + HEARTBEAT.size)) if h is not None]
    if not copies:
        raise JournalFormatError("both heartbeat records are corrupt")
    return max(copies, key=lambda h: h.seq)


@dataclass(frozen=True)
class LoadRecord:
    """What a heartbeat says about the app's load: its container's cumulative CPU counters when they were
    read (`read_at`, monotonic), and how many traces the process can run at once (None: not declared)."""

    seq: int
    read_at: float
    cpu_usage_ns: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_ns: int | None = None
    cpu_quota_cores: float | None = None
    cpu_pressure_some: float | None = None
    online_cores: int | None = None
    cgroup: int = 0
    capacity: int | None = None


def pack_load(record: LoadRecord) -> bytes:
    body = LOAD_BODY.pack(record.seq, record.read_at, opt_int(record.cpu_usage_ns), opt_int(record.cpu_periods),
                          opt_int(record.cpu_throttled_periods), opt_int(record.cpu_throttled_ns),
                          opt_float(record.cpu_quota_cores), opt_float(record.cpu_pressure_some),
                          opt_int(record.online_cores), record.cgroup, opt_int(record.capacity))
    return body + struct.pack("<I4x", crc(body))


def _unpack_load_copy(data: bytes, offset: int) -> LoadRecord | None:
    (seq, read_at, usage, periods, throttled_periods, throttled_ns, quota, pressure, online, group, capacity,
     check) = LOAD.unpack_from(data, offset)
    if seq == 0 or check != crc(data[offset: offset + LOAD_BODY.size]):
        return None
    if not math.isfinite(read_at) or not (math.isnan(quota) or 0 < quota < 1e6) \
            or not (math.isnan(pressure) or 0 <= pressure <= 100):
        return None  # advisory figures no writer writes: dropped, never the journal's counters with them
    return LoadRecord(seq=seq, read_at=read_at, cpu_usage_ns=from_opt_int(usage), cpu_periods=from_opt_int(periods),
                      cpu_throttled_periods=from_opt_int(throttled_periods),
                      cpu_throttled_ns=from_opt_int(throttled_ns), cpu_quota_cores=from_opt_float(quota),
                      cpu_pressure_some=from_opt_float(pressure), online_cores=from_opt_int(online), cgroup=group,
                      capacity=from_opt_int(capacity))


def unpack_load(data: bytes) -> LoadRecord | None:
    """The newest valid copy, or None: a writer of before the load record, or none written yet."""
    copies = [r for r in (_unpack_load_copy(data, LOAD_OFFSET), _unpack_load_copy(data, LOAD_OFFSET + LOAD.size))
              if r is not None]
    return max(copies, key=lambda r: r.seq) if copies else None


def pack_observed(seq: int, observed_at: float) -> bytes:
    body = OBSERVED_BODY.pack(seq, observed_at)
    return body + struct.pack("<I4x", crc(body))


def unpack_observed(data: bytes) -> tuple[int, float | None]:
    """(seq, observed_at) of the newest valid copy; (0, None) when no reader has written one."""
    best: tuple[int, float | None] = (0, None)
    for copy in (0, 1):
        start = OBSERVED_OFFSET + copy * OBSERVED.size
        seq, observed, check = OBSERVED.unpack_from(data, start)
        if seq == 0 or check != crc(data[start: start + OBSERVED_BODY.size]):
            continue
        if not math.isfinite(observed):
            raise JournalFormatError(f"reader observation time {observed!r} is not a finite number")
        if seq > best[0]:
            best = (seq, observed)
    return best


SERIES_CRC = struct.Struct("<I4x")


def pack_series(commit: int, total: float) -> bytes:
    body = SERIES_BODY.pack(commit, total)
    return body + SERIES_CRC.pack(zlib.crc32(body))


def unpack_series(data: bytes, offset: int) -> tuple[int, float]:
    """(commit, total) of the newest valid copy of the series record starting at `offset`."""
    best: tuple[int, float] | None = None
    for copy in (0, 1):
        start = offset + copy * SERIES.size
        commit, total, check = SERIES.unpack_from(data, start)
        if check != crc(data[start: start + SERIES_BODY.size]):
            continue  # torn: the other copy holds the previous commit
        if not (0.0 <= total < math.inf):  # also NaN
            raise JournalFormatError(f"series total {total!r} is not a finite number of seconds >= 0")
        if best is None or commit > best[0]:
            best = (commit, total)
    if best is None:
        raise JournalFormatError("both copies of a series record are corrupt")
    return best


def pad8(n: int) -> int:
    return (n + 7) & ~7
