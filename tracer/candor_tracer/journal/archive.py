"""The archive: totals of dead writers, folded out of their journals, kept in the state directory.

Written as a whole to a temporary file, fsynced and renamed over the old one, so a reader killed at any
moment leaves either the old or the new archive. It also lists the journals already folded, so a
reader that died between the rename and the journal's unlink does not count that journal twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from candor_tracer.journal.files import SAFE_FLAGS, NotARegularFile, read_regular
from candor_tracer.journal.format import ARCHIVE_NAME

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
ARCHIVE_VERSION = 1
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # far above what thousands of series take; bounds a planted file
MAX_NANOSECONDS = 2**80  # about 38 million years: beyond it the number was not written by a reader


class ArchiveError(ValueError):
    """The archive file exists but cannot be understood."""


@dataclass
class Archive:
    totals: dict[SeriesKey, int] = field(default_factory=dict)  # integer nanoseconds: sums are exact
    documentation: dict[SeriesKey, str] = field(default_factory=dict)
    folded: list[str] = field(default_factory=list)
    last_fold: float | None = None

    def add(self, key: SeriesKey, documentation: str, nanoseconds: int) -> None:
        self.totals[key] = self.totals.get(key, 0) + nanoseconds
        self.documentation.setdefault(key, documentation)


def _parse(raw: object) -> Archive:
    if not isinstance(raw, dict) or raw.get("version") != ARCHIVE_VERSION:
        raise ArchiveError("missing or unsupported 'version'")
    archive = Archive()
    series = raw.get("series")
    folded = raw.get("folded")
    last_fold = raw.get("last_fold")
    if not isinstance(series, list) or not isinstance(folded, list):
        raise ArchiveError("'series' and 'folded' must be lists")
    for item in series:
        if not isinstance(item, dict):
            raise ArchiveError("a 'series' entry is not an object")
        name, doc, labels = item.get("name"), item.get("documentation"), item.get("labels")
        value = item.get("nanoseconds")
        if not isinstance(name, str) or not isinstance(doc, str) or not isinstance(labels, list):
            raise ArchiveError("a 'series' entry lacks name/documentation/labels")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_NANOSECONDS:
            raise ArchiveError(f"series {name[:100]!r}: 'nanoseconds' must be an integer in [0, 2**80]")
        pairs: list[tuple[str, str]] = []
        for pair in labels:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ArchiveError(f"series {name!r} has invalid labels")
            pairs.append((pair[0], pair[1]))
        archive.add((name, tuple(pairs)), doc, value)
    if not all(isinstance(n, str) for n in folded):
        raise ArchiveError("'folded' must list journal names")
    archive.folded = list(folded)
    if last_fold is not None and (not isinstance(last_fold, int | float) or not math.isfinite(last_fold)):
        raise ArchiveError("'last_fold' must be a finite number")
    archive.last_fold = None if last_fold is None else float(last_fold)
    return archive


def load_archive(state_dir: Path) -> Archive:
    """The archive in `state_dir`; an empty one when there is none yet.

    Raises ArchiveError when it is corrupt, not a regular file or larger than MAX_ARCHIVE_BYTES, and
    OSError when it cannot be read.
    """
    path = state_dir / ARCHIVE_NAME
    try:
        text = read_regular(path, MAX_ARCHIVE_BYTES)
    except NotARegularFile as exc:
        raise ArchiveError(exc.strerror or "not a regular file") from None
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None
    if text is None:
        return Archive()
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ArchiveError(f"not JSON: {type(exc).__name__}") from None
    return _parse(raw)


def save_archive(state_dir: Path, archive: Archive) -> None:
    """Replace the archive atomically (temp file, fsync, rename, fsync the directory)."""
    doc = {
        "version": ARCHIVE_VERSION,
        "last_fold": archive.last_fold,
        "folded": archive.folded,
        "series": [
            {"name": key[0], "documentation": archive.documentation.get(key, ""),
             "labels": [list(pair) for pair in key[1]], "nanoseconds": value, "seconds": value / 1e9}
            for key, value in sorted(archive.totals.items())
        ],
    }
    data = json.dumps(doc, indent=1).encode()
    tmp = state_dir / f".{ARCHIVE_NAME}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)  # whatever holds the name (a link, a FIFO) is not written through
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | SAFE_FLAGS, 0o666), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, state_dir / ARCHIVE_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
