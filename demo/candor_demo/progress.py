"""The live terminal view: phase, elapsed time, a status line per instance, the latest events.

On a TTY it redraws a small block in place with plain ANSI escapes; otherwise (CI, a pipe, the tests) it prints
one plain line per phase change and event, so logs stay readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_LINE = "\x1b[2K"
CLEAR_TO_END = "\x1b[J"  # whatever a longer previous block left below
BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
RED, GREEN, YELLOW = "\x1b[31m", "\x1b[32m", "\x1b[33m"
SHOWN_EVENTS = 8


class Progress:
    def __init__(self, total_seconds: float, stream: TextIO | None = None,
                 status_lines: Callable[[], list[str]] | None = None, interactive: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.total = total_seconds
        self.started = time.monotonic()
        self.phase = "starting"
        self.events: list[tuple[float, str]] = []
        self.status_lines = status_lines or (lambda: [])
        self._lock = threading.Lock()
        self._drawn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the demo reports ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase = phase
            if not self.interactive:
                self._print_line(f"[{self.elapsed():6.1f}s] == {phase}")

    def event(self, text: str) -> None:
        with self._lock:
            self.events.append((self.elapsed(), text))
            if not self.interactive:
                self._print_line(f"[{self.elapsed():6.1f}s]    {text}")

    def message(self, text: str) -> None:
        """A line that stays (above the live block on a TTY)."""
        with self._lock:
            if self.interactive and self._drawn:
                self._erase()
                self.stream.write(CLEAR_TO_END)
            self._print_line(text)
            if self.interactive and self._thread is not None:
                self._draw()

    # -- drawing ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.interactive:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        with self._lock:
            if self.interactive:
                self._erase()
                self._draw(final=True)
                self._drawn = 0
                self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._erase()
                self._draw()

    def _print_line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _erase(self) -> None:
        """Back to the block's first line; the next draw overwrites it (no blank frame, no flicker)."""
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
            self._drawn = 0

    def _draw(self, final: bool = False) -> None:
        elapsed = self.elapsed()
        width = 30
        filled = min(width, int(width * elapsed / self.total)) if self.total > 0 else width
        bar = "#" * filled + "." * (width - filled)
        lines = [f"{BOLD}candor demo{RESET}  [{bar}] {elapsed:5.0f}s / ~{self.total:.0f}s   {BOLD}{self.phase}{RESET}"]
        try:
            lines.extend(f"  {line}" for line in self.status_lines())
        except Exception as error:  # the view must never take the demo down
            lines.append(f"  {DIM}(status unavailable: {error}){RESET}")
        shown = self.events if final else self.events[-SHOWN_EVENTS:]
        lines.extend(f"  {DIM}{at:6.1f}s{RESET}  {text}" for at, text in shown)
        self.stream.write("".join(f"{CLEAR_LINE}{line}\n" for line in lines) + CLEAR_TO_END)
        self.stream.flush()
        self._drawn = len(lines)


def colour_status(status: str) -> str:
    """HAProxy status with a colour, for the TTY view."""
    base = status.split(" ")[0]
    colour = GREEN if base == "UP" else RED if base in ("DOWN", "MAINT") else YELLOW
    return f"{colour}{status}{RESET}"
