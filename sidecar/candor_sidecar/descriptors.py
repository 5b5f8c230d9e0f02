"""File descriptors: a budget for client connections, and the record of running out.

Every idle client holds a descriptor; so does every journal the reader opens. Unchecked, thousands of
slow clients would make listing the state directory fail with EMFILE, and an empty listing reads as
"the app exited". So each port's connections have a budget (together leaving RESERVED descriptors for
the journals), and any EMFILE/ENFILE that still happens (on accept, or while reading the state directory)
is recorded: /livez fails, a warning is logged, and `candor_descriptor_exhaustions_total` counts it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol, TypeGuard

log = logging.getLogger("candor.sidecar")

RESERVED = 256  # descriptors kept free for journals, the archive, podinfo and the log
# asyncio accepts up to `backlog` pending connections in one round before any of them is admitted or
# dropped, so that round is bounded and counted outside the budget; a connection evicted to make room closes
# one loop turn later, so each listener may hold two rounds' worth beyond its budget for a moment. The
# kernel's queue of connections waiting to be accepted is set deep again afterwards (see `listen`).
ACCEPT_BURST = 64
KERNEL_BACKLOG = 4096
# Each port's own ceiling, whatever the open-file limit: it bounds memory as well as descriptors (an HTTP
# connection costs at most about 60 KiB, see http_server.Limits; an agent connection about 2 KiB), so no
# number of clients brings the sidecar near its 128Mi container limit. Legitimate use is a few connections
# per load balancer and scraper, far below it.
HTTP_CEILING = 512
AGENT_CEILING = 512
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
LOG_EVERY = 10.0  # seconds between two warnings about the same exhaustion


class Evictable(Protocol):
    def evict(self) -> None:
        """Close at once: the connection made room for a newer one."""


class Listener(Protocol):
    """A server whose connections share one ConnectionBudget, counting those open."""

    budget: ConnectionBudget
    connections: int


class BudgetedConnection(asyncio.Protocol):
    """A connection that holds a slot of its listener's budget once `admitted`: whether it closes or is evicted
    to make room, the slot is given back exactly once. The agent's and the HTTP connections are both this."""

    __slots__ = ("admitted", "server", "transport")
    server: Listener
    transport: asyncio.WriteTransport | None

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.admitted = False
        self.transport = None

    def evict(self) -> None:
        self._release()
        if self.transport is not None:
            self.transport.abort()

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            self.server.connections -= 1
            self.server.budget.release(self)


class ConnectionBudget:
    """One port's open client connections; at `limit`, a new one takes the slot of the oldest evictable one.

    Evictable are the connections that cost nothing to end: waiting for a request (idle, kept alive, or
    a head that is slow to come), an agent answer already written, a client that does not read its answer.
    So a flood of connections churns through its own kind and never locks out HAProxy's check or a probe
    (servers such as nginx reuse idle connections the same way when they run out). Only when every slot
    is busy answering is a new connection dropped at once. Each port has its own budget: nothing sent
    to the HTTP port can take the agent's capacity, or the other way round.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0  # dropped at once: every slot busy
        self.evicted = 0  # closed to make room for a newer connection
        self._evictable: dict[Evictable, None] = {}  # oldest first

    @classmethod
    def split_open_file_limit(cls, soft_limit: int) -> tuple[ConnectionBudget, ConnectionBudget]:
        """(HTTP budget, agent budget) leaving RESERVED descriptors and two accept rounds per listener free."""
        spare = soft_limit - RESERVED - 4 * ACCEPT_BURST
        agent = max(min(spare // 4, AGENT_CEILING), 16)  # floors: the probes still get through
        http = max(min(spare - agent, HTTP_CEILING), 16)
        return cls(http), cls(agent)

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
        """Room for one more connection (evicting the oldest evictable one if need be)?"""
        if self.open >= self.limit:
            if not self._evictable:
                self.refused += 1
                return False
            oldest = next(iter(self._evictable))
            self.evicted += 1
            oldest.evict()  # releases its slot now (see release); its socket closes on the next loop turn
        self.open += 1
        return True

    def evictable(self, connection: Evictable, yes: bool = True) -> None:
        """Mark a connection (as the newest) evictable, or no longer."""
        self._evictable.pop(connection, None)
        if yes:
            self._evictable[connection] = None

    def release(self, connection: Evictable) -> None:
        self._evictable.pop(connection, None)
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
