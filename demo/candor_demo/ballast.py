"""Real memory pressure for the memory fault: the app allocates and touches pages until its RSS crosses a line.

Chunks are large, so the allocator maps them with mmap and `free()` gives them back to the kernel at once.
"""

from __future__ import annotations

import gc
import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
CHUNK = 8 * 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (what the sidecar's process-memory check sees)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class Ballast:
    def __init__(self) -> None:
        self._chunks: list[bytearray] = []
        self._lock = threading.Lock()

    def fill_to(self, target_bytes: int, crossing_bytes: int) -> float | None:
        """Allocates until RSS ≥ target; returns the monotonic time RSS first reached `crossing_bytes`."""
        crossed_at = time.monotonic() if rss_bytes() >= crossing_bytes else None
        with self._lock:
            while rss_bytes() < target_bytes:
                chunk = bytearray(CHUNK)
                chunk[::PAGE] = b"\x01" * len(range(0, CHUNK, PAGE))  # touch every page: calloc'd pages are lazy
                self._chunks.append(chunk)
                if crossed_at is None and rss_bytes() >= crossing_bytes:
                    crossed_at = time.monotonic()
        return crossed_at

    def free(self) -> float:
        """Drops the ballast; returns the monotonic time it was gone."""
        with self._lock:
            self._chunks.clear()
        gc.collect()
        return time.monotonic()

    @property
    def size(self) -> int:
        return len(self._chunks) * CHUNK
