"""The sidecar's journal reader: totals across every app process of a pod (apps never import this).

value of a series = archive (dead writers, folded) + completed seconds of live writers + in-flight seconds
of live writers up to `now`. A journal whose lock can be taken belongs to a dead process: its in-flight
traces are closed at the later of its last heartbeat and the last time a reader reported it alive, and
its totals move into the archive, so a total never goes backwards, survives reader restarts and is never
counted twice. All of it runs under `archive.lock`, so concurrent readers never see a half-done fold.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from candor_tracer.journal.archive import Archive, ArchiveError, SeriesKey, load_archive, save_archive
from candor_tracer.journal.decode import JournalReading, read_journal, series_values
from candor_tracer.journal.format import (
    ARCHIVE_LOCK_NAME,
    ARCHIVE_NAME,
    JOURNAL_NAME,
    OBSERVED,
    OBSERVED_OFFSET,
    TEMP_PREFIX,
    JournalFormatError,
    pack_observed,
)

__all__ = [
    "JournalSnapshot",
    "SeriesTotal",
    "WriterInfo",
    "fold_dead_writers",
    "read_totals",
]

log = logging.getLogger("candor_tracer.journal")

# A dead writer's temporary file (killed between creating and publishing its journal) is removed once it
# is this old: younger ones may belong to a writer that has not taken its lock yet.
STALE_TEMP_SECONDS = 60.0
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


@dataclass(frozen=True)
class JournalSnapshot:
    series: tuple[SeriesTotal, ...]
    writers: tuple[WriterInfo, ...]
    skipped: tuple[str, ...]  # corrupt/unreadable journal paths (each warned once per process)
    last_fold: float | None  # wall-clock time.time() of the latest fold into the archive
    now: float  # monotonic time the totals were computed at


_warned: set[str] = set()
_state_lock = threading.Lock()
# The highest value this process has reported per (state dir, series): a live journal read while its
# writer was mid-update can be off by a fraction of a trace; a counter must still never go backwards.
_reported: dict[tuple[str, SeriesKey], int] = {}


def _warn_once(path: str, problem: str) -> None:
    with _state_lock:
        if path in _warned:
            return
        _warned.add(path)
    log.warning("candor: skipping %s: %s", path, problem)


@contextmanager
def _archive_lock(state_dir: Path) -> Iterator[bool]:
    """Hold archive.lock; yields False (no lock: read, don't fold) when the directory cannot be written
    or another reader has held the lock for ARCHIVE_LOCK_TIMEOUT (a stopped process must not hang us)."""
    try:
        fd = os.open(state_dir / ARCHIVE_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + ARCHIVE_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _warn_once(str(state_dir / ARCHIVE_LOCK_NAME), "held by another reader; reading without folding")
                    locked = False
                    break
                time.sleep(0.005)
        yield locked
    finally:
        os.close(fd)


@dataclass
class _Opened:
    path: Path
    fd: int
    writable: bool


def _open_journal(path: Path) -> _Opened | None:
    try:
        return _Opened(path, os.open(path, os.O_RDWR), True)
    except FileNotFoundError:
        return None
    except PermissionError:
        pass
    try:
        return _Opened(path, os.open(path, os.O_RDONLY), False)
    except FileNotFoundError:
        return None


def _writer_is_alive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _remove_stale_temp(path: Path) -> None:
    """Remove a temporary file a writer or reader left when killed (unlocked and older than a minute)."""
    try:
        opened = _open_journal(path)
        if opened is None:
            return
        try:
            if not _writer_is_alive(opened.fd) and time.time() - os.fstat(opened.fd).st_mtime > STALE_TEMP_SECONDS:
                path.unlink(missing_ok=True)
        finally:
            os.close(opened.fd)
    except OSError:
        pass


def _scan(state_dir: Path, skipped: list[str]) -> tuple[list[_Opened], list[_Opened]]:
    """(live, dead) journals of `state_dir`; the dead ones are returned with their lock held."""
    live: list[_Opened] = []
    dead: list[_Opened] = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError as exc:
        _warn_once(str(state_dir), f"cannot list the state directory: {exc}")
        return live, dead
    for name in names:
        path = state_dir / name
        if name.startswith((TEMP_PREFIX, ARCHIVE_TEMP_PREFIX)):
            _remove_stale_temp(path)
            continue
        if not JOURNAL_NAME.match(name):
            continue
        try:
            opened = _open_journal(path)
        except OSError as exc:
            _warn_once(str(path), f"cannot open: {exc}")
            skipped.append(str(path))
            continue
        if opened is None:
            continue
        try:
            alive = _writer_is_alive(opened.fd)
        except OSError as exc:
            os.close(opened.fd)
            _warn_once(str(path), f"cannot lock: {exc}")
            skipped.append(str(path))
            continue
        (live if alive else dead).append(opened)
    return live, dead


def _record_observation(opened: _Opened, reading: JournalReading, now: float) -> None:
    """Persist "a reader reported this writer alive up to `now`" in the journal, for a later fold."""
    if not opened.writable or (reading.observed_at is not None and reading.observed_at >= now):
        return
    seq = reading.observed_seq + 1
    try:
        os.pwrite(opened.fd, pack_observed(seq, now), OBSERVED_OFFSET + (seq % 2) * OBSERVED.size)
    except OSError as exc:
        _warn_once(f"{opened.path} (observation)", f"cannot record the read time: {exc}")


def _dead_close_at(reading: JournalReading) -> float:
    """A dead writer's in-flight traces end at its last heartbeat, or at the last read that saw it alive."""
    if reading.observed_at is not None:
        return max(reading.heartbeat.alive_at, reading.observed_at)
    return reading.heartbeat.alive_at


def _fold(state_dir: Path, archive: Archive, dead: list[_Opened], skipped: list[str]) -> tuple[Archive, int]:
    """Move dead journals into (a copy of) the archive, save it, then remove them.

    Returns the archive now on disk and how many journals were folded. When saving fails (a full
    volume) it raises OSError with nothing changed on disk and `archive` untouched.
    """
    updated = Archive(totals=dict(archive.totals), documentation=dict(archive.documentation),
                      folded=list(archive.folded), last_fold=archive.last_fold)
    already = set(archive.folded)
    to_unlink: list[Path] = []
    folded_now: list[str] = []
    for opened in dead:
        name = opened.path.name
        if name in already:
            to_unlink.append(opened.path)  # folded before a reader died ahead of the unlink
            continue
        try:
            reading = read_journal(opened.fd, live=False)
        except (JournalFormatError, OSError) as exc:
            _warn_once(str(opened.path), str(exc))
            skipped.append(str(opened.path))
            continue
        for desc, value in zip(reading.descs, series_values(reading, _dead_close_at(reading)), strict=True):
            updated.add((desc.name, desc.labels), desc.documentation, value)
        folded_now.append(name)
        to_unlink.append(opened.path)
    if folded_now:
        present = {n for n in archive.folded if (state_dir / n).exists()}
        updated.folded = sorted(present | set(folded_now))
        updated.last_fold = time.time()
        save_archive(state_dir, updated)
    else:
        updated = archive
    for path in to_unlink:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # listed in the archive as folded: never counted twice, retried next time
            _warn_once(f"{path} (unlink)", f"folded but cannot be removed: {exc}")
    return updated, len(folded_now)


def _load_archive(state_dir: Path, skipped: list[str]) -> Archive | None:
    try:
        return load_archive(state_dir)
    except (ArchiveError, OSError) as exc:
        path = str(state_dir / ARCHIVE_NAME)
        _warn_once(path, f"corrupt archive, not folding until it is repaired: {exc}")
        skipped.append(path)
        return None


def fold_dead_writers(state_dir: str | os.PathLike[str]) -> int:
    """Fold every dead writer's journal into the archive; returns the number of journals folded."""
    directory = Path(state_dir)
    skipped: list[str] = []
    with _archive_lock(directory) as writable:
        live, dead = _scan(directory, skipped)
        try:
            archive = _load_archive(directory, skipped) if writable else None
            if archive is None:
                return 0
            try:
                return _fold(directory, archive, dead, skipped)[1]
            except OSError as exc:
                _warn_once(str(directory / ARCHIVE_NAME), f"cannot save the archive, not folding: {exc}")
                return 0
        finally:
            for opened in live + dead:
                os.close(opened.fd)


def _writer_info(opened: _Opened, reading: JournalReading) -> WriterInfo:
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
    )


def read_totals(state_dir: str | os.PathLike[str], now: float | None = None) -> JournalSnapshot:
    """Fold dead writers, then total archive + live journals per (metric, labels) at `now` (monotonic).

    Never raises for a bad or unreadable file: it is skipped (listed in `skipped`, warned once). With the
    default `now` (the current time) the values never go backwards within this process, and each live
    journal records that it was seen alive up to `now`, so a later fold by any reader keeps that time.
    An explicit `now` (tests, what-if) computes at that time without recording or clamping anything.
    """
    directory = Path(state_dir)
    realtime = now is None
    at = time.monotonic() if now is None else now  # taken before the lock probes: "alive at `at`" holds
    skipped: list[str] = []
    totals: dict[SeriesKey, int] = {}  # nanoseconds
    docs: dict[SeriesKey, str] = {}
    writers: list[WriterInfo] = []
    last_fold: float | None = None
    with _archive_lock(directory) as writable:
        live, dead = _scan(directory, skipped)
        try:
            archive = _load_archive(directory, skipped)
            folded_ok = False
            if archive is not None and writable:
                try:
                    archive, _ = _fold(directory, archive, dead, skipped)
                    folded_ok = True
                except OSError as exc:
                    _warn_once(str(directory / ARCHIVE_NAME), f"cannot save the archive, not folding: {exc}")
            if dead and not folded_ok:  # count them in place, unless a fold already moved them into the archive
                folded = set(archive.folded) if archive is not None else set()
                live = live + [d for d in dead if d.path.name not in folded]
            if archive is not None:
                last_fold = archive.last_fold
                for key, value in archive.totals.items():
                    totals[key] = value
                    docs[key] = archive.documentation.get(key, "")
            for opened in live:
                try:
                    reading = read_journal(opened.fd, live=True)
                except (JournalFormatError, OSError) as exc:
                    _warn_once(str(opened.path), str(exc))
                    skipped.append(str(opened.path))
                    continue
                alive = opened not in dead
                close_at = at if alive else _dead_close_at(reading)
                for desc, value in zip(reading.descs, series_values(reading, close_at), strict=True):
                    key = (desc.name, desc.labels)
                    totals[key] = totals.get(key, 0) + value
                    docs.setdefault(key, desc.documentation)
                if alive:
                    writers.append(_writer_info(opened, reading))
                    if realtime:
                        _record_observation(opened, reading, at)
        finally:
            for opened in live + [d for d in dead if d not in live]:
                os.close(opened.fd)
    series = _monotonic_series(directory, totals, docs, clamp=realtime)
    return JournalSnapshot(series=series, writers=tuple(writers), skipped=tuple(skipped),
                           last_fold=last_fold, now=at)


def _monotonic_series(directory: Path, totals: dict[SeriesKey, int], docs: dict[SeriesKey, str],
                      clamp: bool) -> tuple[SeriesTotal, ...]:
    root = str(directory.resolve())
    out: list[SeriesTotal] = []
    with _state_lock:
        for key in sorted(totals):
            value = totals[key]
            if clamp:
                value = max(value, _reported.get((root, key), 0))
                _reported[(root, key)] = value
            out.append(SeriesTotal(name=key[0], documentation=docs.get(key, ""), labels=key[1], value=value / 1e9))
    return tuple(out)
