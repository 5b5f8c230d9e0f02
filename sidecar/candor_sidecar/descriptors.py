"""File descriptors: a budget for client connections, and the record of running out.

Every idle client holds a descriptor; so does every journal the reader opens. Unchecked, thousands of
slow clients would make listing the state directory fail with EMFILE, and an empty listing reads as
"the app exited". So connections share a budget that leaves RESERVED descriptors for the journals, and
any EMFILE/ENFILE that still happens (on accept, or while reading the state directory) is recorded:
/livez fails, a warning is logged, and `candor_descriptor_exhaustions_total` counts it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import TypeGuard

log = logging.getLogger("candor.sidecar")

RESERVED = 256  # descriptors kept free for journals, the archive, podinfo and the log
# asyncio accepts up to `backlog` pending connections in one round before any of them is admitted or
# dropped, so that round is bounded and counted outside the budget (two listeners); the kernel's queue
# of connections waiting to be accepted is set deep again afterwards (see `listen`).
ACCEPT_BURST = 64
KERNEL_BACKLOG = 4096
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
LOG_EVERY = 10.0  # seconds between two warnings about the same exhaustion


class ConnectionBudget:
    """Open client connections across the agent and HTTP ports; over `limit`, new ones are dropped at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0

    @classmethod
    def for_open_file_limit(cls, soft_limit: int, ceiling: int = 50_000) -> ConnectionBudget:
        return cls(max(min(soft_limit - RESERVED - 2 * ACCEPT_BURST, ceiling), 16))

    async def listen(self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int) -> asyncio.Server:
        """A server whose accept rounds fit the budget and whose kernel queue is deep."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, host, port, backlog=min(ACCEPT_BURST, self.limit),
                                          reuse_address=True)
        for listening in server.sockets:
            with listening.dup() as sock:  # the same socket: listen() again only resizes its queue
                sock.listen(KERNEL_BACKLOG)
        return server

    def admit(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class Exhaustion:
    """When the process last ran out of descriptors, and how often it has."""

    def __init__(self) -> None:
        self.count = 0
        self.last: float | None = None  # monotonic
        self._logged_at = float("-inf")

    def seen(self, where: str, error: OSError) -> None:
        now = time.monotonic()
        self.count += 1
        self.last = now
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning("out of file descriptors (%s: %s); /livez fails until it passes", where, error)

    def within(self, seconds: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.last is not None and now - self.last <= seconds


def is_exhaustion(error: object) -> TypeGuard[OSError]:
    return isinstance(error, OSError) and error.errno in EXHAUSTION_ERRNOS


def probe_directory(path: str) -> OSError | None:
    """The exhaustion error opening `path` gives now, or None: tells "no journals" from "could not look"."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as error:
        return error if is_exhaustion(error) else None
    return None
