"""The tracer's critical section: one lock, a busy flag, and the work deferred while busy.

The lock is reentrant because a signal handler runs on the thread it interrupted: one that traces or
scrapes while that thread is inside a journal update must neither deadlock nor interleave with the
half-done update. So a busy section is entered with `enter()`; a caller that finds it busy (necessarily
a signal handler on the same thread) `defer`s its journal work, and `leave()` runs it, in order, before
the section ends.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Guard:
    __slots__ = ("busy", "deferred", "lock")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.busy = False
        self.deferred: collections.deque[Callable[[], None]] = collections.deque()

    def enter(self) -> bool:
        """Start a busy section (the caller holds the lock); False when one is already running."""
        if self.busy:
            return False
        self.busy = True
        return True

    def leave(self) -> None:
        """End the busy section (under the lock): first run what was deferred meanwhile, in order."""
        deferred = self.deferred
        try:
            while deferred:
                deferred.popleft()()
        finally:
            self.busy = False

    def defer(self, work: Callable[[], None]) -> None:
        """Run `work` when the current busy section ends (called under the lock, while busy)."""
        self.deferred.append(work)

    @contextmanager
    def section(self) -> Iterator[bool]:
        """Lock, enter and leave around a block: yields False (and does nothing else) when already busy."""
        with self.lock:
            if not self.enter():
                yield False
                return
            try:
                yield True
            finally:
                self.leave()

    def reset_after_fork(self) -> None:
        """A forked child's copy: the lock may be held by a parent thread that does not exist here."""
        self.lock = threading.RLock()
        self.busy = False
        self.deferred.clear()
