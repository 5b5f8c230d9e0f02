"""The sidecar's journal reader: totals across every app process of a pod (apps never import this).

value of a series = archive (dead writers, folded) + completed seconds of live writers + in-flight seconds
of live writers up to `now`. A journal whose lock can be taken belongs to a dead process: its in-flight
traces are closed at the later of its last heartbeat and the last time a reader reported it alive, and
its totals move into the archive, so a total never goes backwards, survives reader restarts and is never
counted twice. All of it runs under `archive.lock`, so concurrent readers never see a half-done fold.

Any process of the pod can write the state directory, so nothing in it is trusted: a file that is not a
journal a writer could have written (see decode.check_plausible and files) costs that file alone, is
named in `skipped` and warned about once (skips), and is never folded. Only a directory that cannot be listed
at all, or running out of descriptors, raises: that is "unknown", never "no writers".
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from candor_tracer.journal.archive import Archive, ArchiveError, SeriesKey, load_archive, save_archive
from candor_tracer.journal.decode import JournalReading, read_journal, series_values
from candor_tracer.journal.files import (
    SAFE_FLAGS,
    OpenFile,
    is_exhaustion,
    list_entries,
    named_by_its_writer,
    open_journal,
    remove_stale_temp,
    writer_is_alive,
)
from candor_tracer.journal.format import (
    ARCHIVE_LOCK_NAME,
    ARCHIVE_NAME,
    JOURNAL_NAME,
    OBSERVED,
    OBSERVED_OFFSET,
    TEMP_PREFIX,
    LoadRecord,
    pack_observed,
)
from candor_tracer.journal.skips import Skips, warn_once

__all__ = [
    "JournalSnapshot",
    "LoadRecord",
    "SeriesTotal",
    "WriterInfo",
    "fold_dead_writers",
    "read_totals",
    "read_writers",
]

ARCHIVE_LOCK_TIMEOUT = 2.0
ARCHIVE_TEMP_PREFIX = f".{ARCHIVE_NAME}."


@dataclass(frozen=True)
class SeriesTotal:
    name: str  # the Counter's name without "_total", e.g. "job_worked_seconds"
    documentation: str
    labels: tuple[tuple[str, str], ...]  # (labelname, value) pairs in the Counter's label order
    value: float  # seconds: completed + in-flight of live writers up to `now`


@dataclass(frozen=True)
class WriterInfo:
    """One live writer (an app process holding its journal lock)."""

    journal: str
    pid: int
    heartbeat: float | None  # app progress: explicit heartbeat() when the app uses it, else liveness beat
    memory_current: int | None
    memory_max: int | None  # None when "max" or absent
    inactive_file: int | None
    inflight: int
    oldest_inflight_start: float | None
    last_stall_at: float | None  # monotonic start of the latest event-loop stall
    last_stall_seconds: float | None  # its length (still growing while the stall lasts)
    alive_at: float | None = None  # the tracer's own liveness beat (about once a second)
    progress_at: float | None = None  # the latest explicit heartbeat(), None when the app never called it
    loop_turned_at: float | None = None  # the latest turn of a watched event loop
    load: LoadRecord | None = None  # CPU counters and declared capacity; None from a writer of before them
    created_at: float | None = None  # monotonic creation time of the journal
    busy_seconds: float | None = None  # trace-seconds of this process so far, in flight included (occupancy)


@dataclass(frozen=True)
class JournalSnapshot:
    series: tuple[SeriesTotal, ...]
    writers: tuple[WriterInfo, ...]
    skipped: tuple[str, ...]  # files left out as corrupt or unreadable, each once (each warned once per process)
    last_fold: float | None  # wall-clock time.time() of the latest fold into the archive
    now: float  # monotonic time the totals were computed at


_state_lock = threading.Lock()
# The highest value this process has reported per (state dir, series): a live journal read while its
# writer was mid-update can be off by a fraction of a trace; a counter must still never go backwards.
# A series is kept (at that value) when its journal later turns unreadable.
_reported: dict[str, dict[SeriesKey, tuple[int, str]]] = {}


@contextmanager
def _archive_lock(state_dir: Path, skips: Skips) -> Iterator[bool]:
    """Hold archive.lock; yields False (no lock: read, don't fold) when it cannot be opened as a regular file
    or another reader has held it for ARCHIVE_LOCK_TIMEOUT (a stopped process must not hang us)."""
    path = state_dir / ARCHIVE_LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | SAFE_FLAGS, 0o666)
    except OSError as exc:
        if is_exhaustion(exc):
            raise
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS):  # not just read-only
            skips.add(path, f"cannot open the archive lock: {exc}")
        yield False
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            skips.add(path, "the archive lock is not a regular file: reading without folding")
            yield False
            return
        deadline = time.monotonic() + ARCHIVE_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    warn_once(str(path), "held by another reader; reading without folding")
                    locked = False
                    break
                time.sleep(0.005)
        yield locked
    finally:
        os.close(fd)


@dataclass
class _Dead:
    """A dead writer's journal, read: what it adds to the archive when folded."""

    path: Path
    identity: tuple[int, int]
    values: dict[SeriesKey, int]
    docs: dict[SeriesKey, str]


@dataclass
class _Read:
    """What one pass over the directory found."""

    live: dict[SeriesKey, int] = field(default_factory=dict)
    docs: dict[SeriesKey, str] = field(default_factory=dict)
    writers: list[WriterInfo] = field(default_factory=list)
    dead: list[_Dead] = field(default_factory=list)
    already_folded: list[Path] = field(default_factory=list)  # folded before a reader died ahead of the unlink
    aliases: dict[tuple[int, int], list[Path]] = field(default_factory=dict)  # more names of one file


def _values(reading: JournalReading, close_at: float) -> dict[SeriesKey, int]:
    values: dict[SeriesKey, int] = {}
    for desc, value in zip(reading.descs, series_values(reading, close_at), strict=True):
        key = (desc.name, desc.labels)
        values[key] = values.get(key, 0) + value
    return values


def _dead_close_at(reading: JournalReading) -> float:
    """A dead writer's in-flight traces end at its last heartbeat, or at the last read that saw it alive."""
    if reading.observed_at is not None:
        return max(reading.heartbeat.alive_at, reading.observed_at)
    return reading.heartbeat.alive_at


def _decode(opened: OpenFile, live: bool, skips: Skips) -> JournalReading | None:
    """The journal's reading, or None when it is corrupt (named in `skips`)."""
    try:
        return read_journal(opened.fd, live=live)
    except Exception as exc:  # any bytes at all: the file is corrupt, nothing else is
        if is_exhaustion(exc):
            raise
        skips.add(opened.path, str(exc) or type(exc).__name__)
        return None


def _pass(state_dir: Path, folded: set[str], at: float, realtime: bool, read_live: bool, skips: Skips,
          live_series: bool = True) -> _Read:
    """Read every journal of `state_dir` once (one descriptor at a time, so thousands of files cost no more).

    `live_series=False`: the live writers' series are not totalled (their writers, heartbeats and slots are).
    """
    found = _Read()
    seen: set[tuple[int, int]] = set()
    directory = str(state_dir)
    for entry in list_entries(state_dir):
        name = entry.name
        if name.startswith((TEMP_PREFIX, ARCHIVE_TEMP_PREFIX)):
            remove_stale_temp(entry)
            continue
        if not JOURNAL_NAME.match(name) or skips.known_bad(directory, entry):
            continue
        opened = open_journal(entry, skips.add)
        if opened is None:
            skips.remember_bad(directory, entry)
            continue
        try:
            if opened.identity in seen:
                found.aliases.setdefault(opened.identity, []).append(opened.path)
                skips.add(opened.path, "another name of a journal already read (read once)")
                continue
            if not named_by_its_writer(opened, skips.add):
                found.aliases.setdefault(opened.identity, []).append(opened.path)
                continue
            seen.add(opened.identity)
            try:
                alive = writer_is_alive(opened.fd)
            except OSError as exc:
                if is_exhaustion(exc):
                    raise
                skips.add(opened.path, f"cannot lock: {exc.strerror or exc}")
                continue
            if alive:
                if read_live:
                    _read_live(opened, at, realtime, found, skips, live_series)
            elif name in folded:
                found.already_folded.append(opened.path)
            else:
                reading = _decode(opened, False, skips)
                if reading is None:
                    skips.remember_bad(directory, entry)
                else:
                    docs = {(d.name, d.labels): d.documentation for d in reading.descs}
                    found.dead.append(_Dead(opened.path, opened.identity, _values(reading, _dead_close_at(reading)),
                                            docs))
        finally:
            os.close(opened.fd)
    return found


def _read_live(opened: OpenFile, at: float, realtime: bool, found: _Read, skips: Skips, series: bool) -> None:
    reading = _decode(opened, True, skips)
    if reading is None:
        # Its lock says a process is alive; its bytes say nothing we can trust. Still a writer, so a
        # damaged file never reads as "the app exited" (and the lock goes when the process does).
        match = JOURNAL_NAME.match(opened.path.name)
        found.writers.append(WriterInfo(journal=str(opened.path), pid=int(match[1]) if match else 0, heartbeat=None,
                                        memory_current=None, memory_max=None, inactive_file=None, inflight=0,
                                        oldest_inflight_start=None, last_stall_at=None, last_stall_seconds=None))
        return
    if series:
        for key, value in _values(reading, at).items():
            found.live[key] = found.live.get(key, 0) + value
        for desc in reading.descs:
            found.docs.setdefault((desc.name, desc.labels), desc.documentation)
    found.writers.append(_writer_info(opened, reading, at))
    if realtime:
        _record_observation(opened, reading, at)


def _record_observation(opened: OpenFile, reading: JournalReading, now: float) -> None:
    """Persist "a reader reported this writer alive up to `now`" in the journal, for a later fold."""
    if not opened.writable or (reading.observed_at is not None and reading.observed_at >= now):
        return
    seq = reading.observed_seq + 1
    try:
        os.pwrite(opened.fd, pack_observed(seq, now), OBSERVED_OFFSET + (seq % 2) * OBSERVED.size)
    except OSError as exc:
        warn_once(f"{opened.path} (observation)", f"cannot record the read time: {exc}")


def _fold(state_dir: Path, archive: Archive, found: _Read) -> Archive:
    """Move dead journals into (a copy of) the archive, save it, then remove them (and their other names).

    Returns the archive now on disk. When saving fails (a full volume) it raises OSError with nothing
    changed on disk and `archive` untouched.
    """
    to_unlink = list(found.already_folded)
    updated = archive
    if found.dead:
        updated = Archive(totals=dict(archive.totals), documentation=dict(archive.documentation),
                          folded=list(archive.folded), last_fold=time.time())
        names: set[str] = set()
        for dead in found.dead:
            for key, value in dead.values.items():
                updated.add(key, dead.docs.get(key, ""), value)
            for path in (dead.path, *found.aliases.get(dead.identity, ())):
                names.add(path.name)
                to_unlink.append(path)
        present = {n for n in archive.folded if (state_dir / n).exists()}
        updated.folded = sorted(present | names)
        save_archive(state_dir, updated)
    for path in to_unlink:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # listed in the archive as folded: never counted twice, retried next time
            warn_once(f"{path} (unlink)", f"folded but cannot be removed: {exc}")
    return updated


def _load_archive(state_dir: Path, skips: Skips) -> Archive | None:
    try:
        return load_archive(state_dir)
    except (ArchiveError, OSError) as exc:
        if is_exhaustion(exc):
            raise
        skips.add(state_dir / ARCHIVE_NAME, f"corrupt archive, not folding until it is repaired: {exc}")
        return None


def fold_dead_writers(state_dir: str | os.PathLike[str]) -> int:
    """Fold every dead writer's journal into the archive; returns the number of journals folded.

    Raises OSError when the directory cannot be listed or descriptors run out.
    """
    directory = Path(state_dir)
    skips = Skips()
    with _archive_lock(directory, skips) as writable:
        archive = _load_archive(directory, skips) if writable else None
        if archive is None:
            return 0
        found = _pass(directory, set(archive.folded), time.monotonic(), False, False, skips)
        try:
            _fold(directory, archive, found)
        except OSError as exc:
            if is_exhaustion(exc):
                raise
            warn_once(str(directory / ARCHIVE_NAME), f"cannot save the archive, not folding: {exc}")
            return 0
        return len(found.dead)


def _writer_info(opened: OpenFile, reading: JournalReading, at: float) -> WriterInfo:
    hb = reading.heartbeat
    starts = reading.active_starts()
    return WriterInfo(
        journal=str(opened.path),
        pid=reading.header.pid,
        heartbeat=hb.progress_at if hb.progress_at is not None else hb.alive_at,
        memory_current=hb.memory_current,
        memory_max=hb.memory_max,
        inactive_file=hb.inactive_file,
        inflight=len(starts),
        oldest_inflight_start=min(starts) if starts else None,
        last_stall_at=hb.stall_at,
        last_stall_seconds=hb.stall_seconds,
        alive_at=hb.alive_at,
        progress_at=hb.progress_at,
        loop_turned_at=hb.loop_turned_at,
        load=reading.load,
        created_at=reading.header.created_mono,
        busy_seconds=sum(series_values(reading, at)) / 1e9,
    )


def read_totals(state_dir: str | os.PathLike[str], now: float | None = None) -> JournalSnapshot:
    """Fold dead writers, then total archive + live journals per (metric, labels) at `now` (monotonic).

    Never raises for what a file holds: a bad or unreadable file is skipped (listed once in `skipped`,
    warned once). Raises OSError only when the directory itself cannot be listed or descriptors run out,
    which says nothing about the writers. With the default `now` (the current time) the values never go
    backwards within this process, and each live journal records that it was seen alive up to `now`, so a
    later fold by any reader keeps that time. An explicit `now` (tests, what-if) computes at that time
    without recording or clamping anything.
    """
    return _read(state_dir, now, with_series=True)


def read_writers(state_dir: str | os.PathLike[str], now: float | None = None) -> JournalSnapshot:
    """What health checks need, without the series: like read_totals (dead writers folded, live ones
    recorded as seen), but `series` is empty and no live series is totalled, so evaluating many journals
    every second stays cheap."""
    return _read(state_dir, now, with_series=False)


def _read(state_dir: str | os.PathLike[str], now: float | None, with_series: bool) -> JournalSnapshot:
    directory = Path(state_dir)
    realtime = now is None
    at = time.monotonic() if now is None else now  # taken before the lock probes: "alive at `at`" holds
    skips = Skips()
    with _archive_lock(directory, skips) as writable:
        archive = _load_archive(directory, skips)
        found = _pass(directory, set(archive.folded) if archive is not None else set(), at, realtime, True, skips,
                      live_series=with_series)
        totals: dict[SeriesKey, int] = {}
        docs: dict[SeriesKey, str] = {}
        if archive is not None and writable:
            try:
                archive = _fold(directory, archive, found)
                found.dead = []  # now in the archive
            except OSError as exc:
                if is_exhaustion(exc):
                    raise
                warn_once(str(directory / ARCHIVE_NAME), f"cannot save the archive, not folding: {exc}")
    last_fold = archive.last_fold if archive is not None else None
    if not with_series:
        return JournalSnapshot(series=(), writers=tuple(found.writers), skipped=tuple(skips.paths),
                               last_fold=last_fold, now=at)
    if archive is not None:
        totals.update(archive.totals)
        docs.update({key: archive.documentation.get(key, "") for key in archive.totals})
    for dead in found.dead:  # not folded (no archive, or it could not be saved): counted where they are
        for key, value in dead.values.items():
            totals[key] = totals.get(key, 0) + value
            docs.setdefault(key, dead.docs.get(key, ""))
    for key, value in found.live.items():
        totals[key] = totals.get(key, 0) + value
        docs.setdefault(key, found.docs.get(key, ""))
    series = _monotonic_series(directory, totals, docs, clamp=realtime)
    return JournalSnapshot(series=series, writers=tuple(found.writers), skipped=tuple(skips.paths),
                           last_fold=last_fold, now=at)


def _monotonic_series(directory: Path, totals: dict[SeriesKey, int], docs: dict[SeriesKey, str],
                      clamp: bool) -> tuple[SeriesTotal, ...]:
    """The series at their totals; with `clamp`, never below what this process reported before, and a
    series reported before is still there (at its last value) when its journal can no longer be read."""
    values = dict(totals)
    if clamp:
        with _state_lock:
            reported = _reported.setdefault(str(directory.resolve()), {})
            for key, (before, doc) in reported.items():
                if values.get(key, -1) < before:
                    values[key] = before
                    docs.setdefault(key, doc)
            for key, value in values.items():
                reported[key] = (value, docs.get(key, ""))
    return tuple(SeriesTotal(name=key[0], documentation=docs.get(key, ""), labels=key[1], value=values[key] / 1e9)
                 for key in sorted(values))
