"""The app side of a trace journal: one mmap'd, flock'd file per process (layout in journal.format).

Not thread-safe by itself: the tracer calls start/end/series_index under its own lock, and `beat` is
serialised by a lock of its own (the heartbeat thread and atexit are its only callers).
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import secrets
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no journal (the tracer falls back to in-process mode), tracing still works
    fcntl = None  # type: ignore[assignment]

from candor_tracer.cgroup import MemoryFigures
from candor_tracer.journal.format import (
    ACTIVE,
    COUNTERS,
    COUNTERS_OFFSET,
    DESC_HEAD,
    DESC_OFFSET,
    DESC_SIZE,
    ENDING,
    FILE_SIZE,
    FIRST_PAGE,
    FREE,
    HEADER_OFFSET,
    HEARTBEAT,
    HEARTBEAT_OFFSET,
    LOAD,
    LOAD_OFFSET,
    MAX_SERIES,
    MAX_SLOTS,
    SERIES,
    SERIES_BODY,
    SERIES_CRC,
    SERIES_OFFSET,
    SERIES_STRIDE,
    SLOT,
    SLOT_END_FIELDS,
    SLOT_END_OFFSET,
    SLOT_FIELDS,
    SLOT_STATE_OFFSET,
    SLOTS_OFFSET,
    TEMP_PREFIX,
    Counters,
    Header,
    Heartbeat,
    LoadRecord,
    crc,
    journal_name,
    pack_counters,
    pack_header,
    pack_heartbeat,
    pack_load,
    pack_series,
    pad8,
)
from candor_tracer.procinfo import process_start_ticks

SeriesIdentity = tuple[str, str, tuple[tuple[str, str], ...]]
ALLOCATION_CHUNK = 64 * 1024

# Bound once: start() and end() run on every trace.
_SLOT_SIZE = SLOT.size
_SLOT_FIELDS_SIZE = SLOT_FIELDS.size
_SLOT_END_SIZE = SLOT_END_FIELDS.size
_SERIES_SIZE = SERIES.size
_pack_slot = SLOT_FIELDS.pack
_pack_end = SLOT_END_FIELDS.pack
_pack_series_body = SERIES_BODY.pack
_pack_series_crc = SERIES_CRC.pack
_crc32 = zlib.crc32


class JournalFull(Exception):
    """No room for another series or in-flight slot: that trace is counted in-process only."""


class JournalWriter:
    def __init__(self, state_dir: Path) -> None:
        self.pid = os.getpid()
        self.starttime = process_start_ticks()
        self._allocated: set[int] = set()  # chunks of the file with blocks reserved
        self.path, self._fd = self._create(state_dir)
        try:
            self._mm = mmap.mmap(self._fd, FILE_SIZE)
        except BaseException:
            os.close(self._fd)
            raise
        self._series: dict[SeriesIdentity, int] = {}
        self._totals: list[float] = []
        self._commits: list[int] = []
        self._desc_used = 0
        self._counters_seq = 1
        self._free: list[int] = []
        self._hwm = 0
        self._starts: list[float] = []  # start time per slot
        self._beat_lock = threading.Lock()
        self._beat_seq = 1
        # Figures the heartbeat carries, set by heartbeat() and the event-loop watchdog.
        self.progress_at: float | None = None
        self.stall_at: float | None = None
        self.stall_seconds: float | None = None
        self.loop_turned_at: float | None = None
        self.closed = False

    def _create(self, state_dir: Path) -> tuple[Path, int]:
        """Create, lock and initialise the file under a temporary name, then publish it.

        Readers only look at published names, so they never see an unlocked journal of a live writer.
        """
        if fcntl is None:
            raise OSError("journal mode needs flock (fcntl), which this platform lacks")
        state_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(16):
            nonce = secrets.token_hex(4)
            final = state_dir / journal_name(self.pid, self.starttime, nonce)
            temp = state_dir / f"{TEMP_PREFIX}{self.pid}-{nonce}.tmp"
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.fchmod(fd, 0o666)  # the sidecar may run as another user and records its reads here
                os.ftruncate(fd, FILE_SIZE)  # sparse: only the chunks in use get blocks
                self._allocated.clear()
                self._allocate(fd, 0, FIRST_PAGE)
                self._init_file(fd)
                try:
                    os.link(temp, final)  # fails instead of replacing an existing journal
                except FileExistsError:
                    os.unlink(temp)
                    os.close(fd)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                    if final.exists():
                        os.unlink(temp)
                        os.close(fd)
                        continue
                    os.rename(temp, final)
                else:
                    os.unlink(temp)
                return final, fd
            except BaseException:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
        raise FileExistsError(f"cannot find a free journal name in {state_dir}")

    def _allocate(self, fd: int, start: int, end: int) -> None:
        """Reserve blocks for [start, end) before the map touches them.

        A store into a sparse page the filesystem cannot back (disk or tmpfs full) kills the process with
        SIGBUS; reserving first turns that into an OSError here, which the tracer survives.
        """
        for chunk in range(start // ALLOCATION_CHUNK, (end - 1) // ALLOCATION_CHUNK + 1):
            if chunk not in self._allocated:
                offset = chunk * ALLOCATION_CHUNK
                os.posix_fallocate(fd, offset, min(ALLOCATION_CHUNK, FILE_SIZE - offset))
                self._allocated.add(chunk)

    def _init_file(self, fd: int) -> None:
        now = time.monotonic()
        header = pack_header(Header(pid=self.pid, starttime=self.starttime, created_mono=now,
                                    created_wall=time.time()))
        os.pwrite(fd, header, HEADER_OFFSET)
        # Copy `seq % 2` holds seq: the first update (seq 2) then goes to the other copy, not over this one.
        os.pwrite(fd, pack_counters(Counters(seq=1, series_count=0, slot_hwm=0, desc_used=0)),
                  COUNTERS_OFFSET + COUNTERS.size)
        beat = Heartbeat(seq=1, alive_at=now, progress_at=None, memory_current=None, memory_max=None,
                         inactive_file=None, stall_at=None, stall_seconds=None, loop_turned_at=None)
        os.pwrite(fd, pack_heartbeat(beat), HEARTBEAT_OFFSET + HEARTBEAT.size)

    # --- series and counters ---------------------------------------------------------------

    def _write_counters(self) -> None:
        self._counters_seq += 1
        seq = self._counters_seq
        data = pack_counters(Counters(seq=seq, series_count=len(self._totals), slot_hwm=self._hwm,
                                      desc_used=self._desc_used))
        self._mm[COUNTERS_OFFSET + (seq % 2) * COUNTERS.size: COUNTERS_OFFSET + (seq % 2 + 1) * COUNTERS.size] = data

    def series_index(self, name: str, documentation: str, labels: tuple[tuple[str, str], ...]) -> int:
        identity = (name, documentation, labels)
        index = self._series.get(identity)
        if index is not None:
            return index
        raw = json.dumps({"n": name, "h": documentation, "l": [list(p) for p in labels]},
                         separators=(",", ":")).encode()
        size = pad8(DESC_HEAD.size + len(raw))
        if len(self._totals) >= MAX_SERIES or self._desc_used + size > DESC_SIZE:
            raise JournalFull(f"journal {self.path} has no room for another series")
        index = len(self._totals)
        pos = DESC_OFFSET + self._desc_used
        base = SERIES_OFFSET + index * SERIES_STRIDE
        try:
            self._allocate(self._fd, pos, pos + size)
            self._allocate(self._fd, base, base + SERIES_STRIDE)
        except OSError as exc:
            raise JournalFull(f"journal {self.path}: no space for another series ({exc})") from None
        self._mm[pos: pos + DESC_HEAD.size + len(raw)] = DESC_HEAD.pack(len(raw), crc(raw)) + raw
        record = pack_series(0, 0.0)
        self._mm[base: base + SERIES_STRIDE] = record + record
        self._desc_used += size
        self._totals.append(0.0)
        self._commits.append(0)
        self._write_counters()  # publishes the series last
        self._series[identity] = index
        return index

    # --- in-flight slots -------------------------------------------------------------------

    def start_free(self, series: int, now: float) -> int:
        """Record a trace start in a free slot, without any lock; -1 when none is free (then `start`).

        Safe from any thread and from a signal handler: the pop is atomic and everything else written
        belongs to the popped slot alone.
        """
        try:
            slot = self._free.pop()
        except IndexError:
            return -1
        self._starts[slot] = now
        at = SLOTS_OFFSET + slot * _SLOT_SIZE
        mm = self._mm
        mm[at: at + _SLOT_FIELDS_SIZE] = _pack_slot(now, 0.0, 0, series)
        mm[at + SLOT_STATE_OFFSET] = ACTIVE  # last: a torn start leaves a FREE slot
        return slot

    def start(self, series: int, now: float) -> int:
        """Record a trace start, growing the slot table when none is free (under the tracer's lock)."""
        slot = self.start_free(series, now)  # lock-free starts may empty the free list at any moment
        if slot >= 0:
            return slot
        if self._hwm >= MAX_SLOTS:
            raise JournalFull(f"journal {self.path} has no free in-flight slot")
        slot = self._hwm
        at = SLOTS_OFFSET + slot * _SLOT_SIZE
        try:
            self._allocate(self._fd, at, at + _SLOT_SIZE)
        except OSError as exc:
            raise JournalFull(f"journal {self.path}: no space for another in-flight slot ({exc})") from None
        self._hwm += 1
        self._starts.append(now)
        self._write_counters()  # before the slot turns ACTIVE, so a reader scans it
        mm = self._mm
        mm[at: at + _SLOT_FIELDS_SIZE] = _pack_slot(now, 0.0, 0, series)
        mm[at + SLOT_STATE_OFFSET] = ACTIVE  # last: a torn start leaves a FREE slot
        return slot

    def end(self, slot: int, series: int, end: float) -> None:
        """Move a trace's seconds from its slot into its series total, crash-consistently."""
        mm = self._mm
        at = SLOTS_OFFSET + slot * _SLOT_SIZE
        start = self._starts[slot]
        commits = self._commits
        commit = commits[series] + 1
        total = self._totals[series] + (end - start if end > start else 0.0)
        # 1. ENDING: "my seconds are in the series record once it reaches `commit`".
        fields = at + SLOT_END_OFFSET
        mm[fields: fields + _SLOT_END_SIZE] = _pack_end(end, commit)
        state = at + SLOT_STATE_OFFSET
        mm[state] = ENDING
        # 2. The series record, into the copy not holding the previous commit.
        record = SERIES_OFFSET + series * SERIES_STRIDE + (commit & 1) * _SERIES_SIZE
        body = _pack_series_body(commit, total)
        mm[record: record + _SERIES_SIZE] = body + _pack_series_crc(_crc32(body))
        # 3. FREE.
        mm[state] = FREE
        commits[series] = commit
        self._totals[series] = total
        self._free.append(slot)

    # --- heartbeat -------------------------------------------------------------------------

    def beat(self, memory: MemoryFigures, now: float | None = None, load: LoadRecord | None = None) -> None:
        """Write a heartbeat, and the load record when given (its seq is the beat's: set here)."""
        with self._beat_lock:
            if self.closed:
                return
            self._beat_seq += 1
            seq = self._beat_seq
            data = pack_heartbeat(Heartbeat(
                seq=seq, alive_at=time.monotonic() if now is None else now, progress_at=self.progress_at,
                memory_current=memory.current, memory_max=memory.limit, inactive_file=memory.inactive_file,
                stall_at=self.stall_at, stall_seconds=self.stall_seconds, loop_turned_at=self.loop_turned_at))
            offset = HEARTBEAT_OFFSET + (seq % 2) * HEARTBEAT.size
            self._mm[offset: offset + HEARTBEAT.size] = data
            if load is not None:
                offset = LOAD_OFFSET + (seq % 2) * LOAD.size
                self._mm[offset: offset + LOAD.size] = pack_load(replace(load, seq=seq))

    # --- lifetime --------------------------------------------------------------------------

    def abandon_after_fork(self) -> None:
        """In a forked child: drop the parent's journal without touching it (the parent still owns it).

        Closing our copy of the descriptor keeps the parent's lock: flock belongs to the open file
        description, which the parent still holds.
        """
        self.closed = True
        self._beat_lock = threading.Lock()
        for close in (self._mm.close, lambda: os.close(self._fd)):
            with contextlib.suppress(OSError, ValueError, BufferError):
                close()

    def close(self) -> None:
        """Release the journal (the lock goes with the descriptor); readers then fold it."""
        with self._beat_lock:
            self.closed = True
        for close in (self._mm.close, lambda: os.close(self._fd)):
            with contextlib.suppress(OSError, ValueError, BufferError):
                close()
