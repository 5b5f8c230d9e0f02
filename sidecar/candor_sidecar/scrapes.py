"""/metrics scrapes that arrive together share one journal read, on a worker thread of their own.

Reading every journal's series costs milliseconds to seconds, depending on the app. The evaluation that
`/health` and the agent answer from reads the journals on its own thread; scrapes never queue in front of
it. And a scrape that arrives while a read is under way awaits that read instead of starting another, so
hundreds of concurrent scrapes cost one read and one rendering per format, not hundreds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Flight(Generic[T]):
    """One read under way, or done, and what was rendered from it (shared by the scrapes that joined it)."""

    def __init__(self, future: asyncio.Future[T], after_fold: bool) -> None:
        self.future = future
        self.after_fold = after_fold
        self.rendered: dict[str, tuple[bytes, str]] = {}  # Accept format -> (body, content type)


class SingleFlight(Generic[T]):
    """`read()` runs on one worker thread; callers arriving while it runs share its result."""

    def __init__(self, read: Callable[[], T], thread_name: str) -> None:
        self._read = read
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._current: Flight[T] | None = None
        self.reads = 0  # reads started since the sidecar started

    def join(self, after_fold: bool) -> Flight[T]:
        """The flight under way, or a new one. A scrape that must see the final fold (`after_fold`) never
        joins a read begun before it."""
        current = self._current
        if current is not None and not current.future.done() and (current.after_fold or not after_fold):
            return current
        self.reads += 1
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._read)
        flight = Flight(future, after_fold)
        self._current = flight
        return flight

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
