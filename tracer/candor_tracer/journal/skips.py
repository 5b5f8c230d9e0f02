"""The record of what a read of the state directory left out, and why.

A file that is not a journal a writer could have written costs that file alone: it is named in the read's
`skipped` and warned about once per process, however often it is met. A bad file no writer holds is also
remembered by its lstat signature, so it is not opened again until someone changes it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from candor_tracer.journal.files import is_exhaustion

__all__ = ["Skips", "warn_once"]

log = logging.getLogger("candor_tracer.journal")

_warned: set[str] = set()
_warned_lock = threading.Lock()  # readers run in threads of one sidecar


def warn_once(path: str, problem: str) -> None:
    with _warned_lock:
        if path in _warned:
            return
        if len(_warned) > 100_000:  # a directory churning through bad names must not grow this forever
            _warned.clear()
        _warned.add(path)
    log.warning("candor: skipping %s: %s", path, problem)


# Files found bad that no writer holds, by (directory, name): their lstat signature then. A
# dead file changes only when someone writes it, which changes its signature; until then it is not
# opened again, so thousands of planted files cost a stat each per read, not an open, a read and a lock.
_known_bad: dict[tuple[str, str], tuple[int, ...]] = {}


def _signature(entry: os.DirEntry[str]) -> tuple[int, ...]:
    st = entry.stat(follow_symlinks=False)
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Skips:
    """The files left out of one read: each listed once, whatever went wrong with it and how often."""

    def __init__(self) -> None:
        self.paths: dict[str, None] = {}

    def add(self, path: Path | str, problem: str) -> None:
        warn_once(str(path), problem)
        self.paths.setdefault(str(path))

    def known_bad(self, state_dir: str, entry: os.DirEntry[str]) -> bool:
        """True (and skipped again) when `entry` is a dead bad file unchanged since it was found bad."""
        known = _known_bad.get((state_dir, entry.name))
        if known is None:
            return False
        try:
            unchanged = _signature(entry) == known
        except OSError as exc:
            if is_exhaustion(exc):
                raise
            unchanged = False
        if unchanged:
            self.paths.setdefault(entry.path)
            return True
        del _known_bad[(state_dir, entry.name)]
        return False

    def remember_bad(self, state_dir: str, entry: os.DirEntry[str]) -> None:
        """`entry` was just skipped and no writer holds it: skip it unopened while it stays as it is."""
        if entry.path not in self.paths:
            return
        try:
            signature = _signature(entry)
        except OSError as exc:
            if is_exhaustion(exc):
                raise
            return
        if len(_known_bad) > 200_000:
            _known_bad.clear()
        _known_bad[(state_dir, entry.name)] = signature
