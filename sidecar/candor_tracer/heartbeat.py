"""The journal's heartbeat: a daemon thread that proves the process alive and carries its memory figures."""

from __future__ import annotations

import logging
import threading

from candor_tracer.cgroup import MemoryReader
from candor_tracer.journal_writer import JournalWriter

log = logging.getLogger("candor_tracer")


class HeartbeatThread:
    def __init__(self, writer: JournalWriter, interval: float, memory: MemoryReader | None = None) -> None:
        self._writer = writer
        self._interval = interval
        # Looked up at call time: the demo swaps candor_tracer.heartbeat.MemoryReader for a process-RSS one.
        self._memory = memory or MemoryReader()
        self._stop = threading.Event()
        self._warned = False
        self.beat_now()
        self._thread = threading.Thread(target=self._run, name="candor-heartbeat", daemon=True)
        self._thread.start()

    def beat_now(self) -> None:
        try:
            self._writer.beat(self._memory.read())
        except Exception as exc:  # the app must never notice: note it once, keep trying
            if not self._warned:
                self._warned = True
                log.warning("candor: cannot write the heartbeat to %s: %s", self._writer.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat_now()

    def stop(self) -> None:
        self._stop.set()
