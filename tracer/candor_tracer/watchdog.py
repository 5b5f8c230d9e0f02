"""Opt-in asyncio watchdog: notices an event loop that stopped turning and records the stall.

A callback on the loop stamps each turn; a thread checks the stamp. A gap longer than `threshold` is a
stall: its start and (growing) length go into the journal's heartbeat at once, so the sidecar's
deadlock check sees a blocked loop even though the process is alive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import TracebackType

from candor_tracer.tracer import Tracer

log = logging.getLogger("candor_tracer")


class LoopWatch:
    """Handle returned by `watch_event_loop`; `stop()` (or leaving a `with` block) ends the watch."""

    def __init__(self, tracer: Tracer, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        if not threshold > 0:
            raise ValueError(f"watch_event_loop: threshold must be > 0 seconds, got {threshold!r}")
        self._tracer = tracer
        tracer.open_journal()
        self._loop = loop
        self.threshold = threshold
        self._period = max(min(threshold / 4, 1.0), 0.005)
        self._last_turn = time.monotonic()
        self._stall_at: float | None = None
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.stalls = 0  # stalls seen so far
        loop.call_soon_threadsafe(self._turn)
        self._thread = threading.Thread(target=self._watch, name="candor-loop-watchdog", daemon=True)
        self._thread.start()

    def _turn(self) -> None:
        if self._stopped.is_set():
            return
        now = time.monotonic()
        self._last_turn = now
        stall_at = self._stall_at
        if stall_at is not None:
            self._stall_at = None
            log.warning("candor: event loop was blocked for %.3f s", now - stall_at)
            self._tracer._watch_note(loop_turned_at=now, stall=(stall_at, now - stall_at))
        else:
            self._tracer._watch_note(loop_turned_at=now)
        self._handle = self._loop.call_later(self._period, self._turn)

    def _watch(self) -> None:
        while not self._stopped.wait(self._period):
            if self._loop.is_closed():
                return
            last = self._last_turn
            gap = time.monotonic() - last
            if gap > self.threshold:
                if self._stall_at != last:
                    self._stall_at = last
                    self.stalls += 1
                self._tracer._watch_note(stall=(last, gap))

    def stop(self) -> None:
        self._stopped.set()
        handle = self._handle
        if handle is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(handle.cancel)

    def __enter__(self) -> LoopWatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
