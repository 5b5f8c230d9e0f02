"""The agent-check listener, answered on the sidecar's event loop from the state the evaluation keeps.

HAProxy polls once per `agent-inter` per load balancer, so answering is one formatted line per
connection: no task, only a small protocol object and one timer. The line goes out at once (HAProxy's
`agent-send`, if any, is not waited for); then our side is shut and whatever the peer sent is read until
it closes, so closing sends a FIN, not a reset. A peer that never closes is cut off after `linger`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from candor_sidecar.agent import AgentState
from candor_sidecar.descriptors import AGENT_CEILING, BudgetedConnection, ConnectionBudget


class AgentPeers:
    """The source addresses that polled the agent, when each last did, and when each last heard `drain`.

    Times are monotonic. Bounded, so a scan from many addresses cannot grow it: the oldest entries are
    forgotten first. A draining sidecar reads it to know which load balancers are still asking and which
    of them have been told (see candor_sidecar.drain).
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._last_poll: OrderedDict[str, float] = OrderedDict()
        self._heard_drain: dict[str, float] = {}
        self._on_heard: list[Callable[[], None]] = []

    def on_heard(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time a peer has heard `drain`."""
        self._on_heard.append(callback)

    def record(self, address: str, when: float) -> None:
        self._last_poll[address] = when
        self._last_poll.move_to_end(address)
        while len(self._last_poll) > self.limit:
            forgotten, _ = self._last_poll.popitem(last=False)
            self._heard_drain.pop(forgotten, None)

    def heard_drain(self, address: str, when: float) -> None:
        """A connection from `address` answered `drain` has ended: that load balancer has read the answer."""
        if address in self._last_poll:
            self._heard_drain[address] = when
            for callback in self._on_heard:
                callback()

    def heard_drain_at(self, address: str) -> float | None:
        return self._heard_drain.get(address)

    def last_poll(self) -> dict[str, float]:
        """Address -> monotonic time of its latest poll."""
        return dict(self._last_poll)

    def polled_since(self, since: float) -> list[str]:
        """Addresses whose latest poll is at or after `since`."""
        return [address for address, when in self._last_poll.items() if when >= since]


class _AgentConnection(BudgetedConnection):
    __slots__ = ("answered_drain", "peer", "timer")
    server: AgentServer

    def __init__(self, server: AgentServer) -> None:
        super().__init__(server)
        self.timer: asyncio.TimerHandle | None = None
        self.peer: str | None = None
        self.answered_drain = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        server = self.server
        if not server.budget.admit():
            transport.abort()  # dropped at once: descriptors for the journals come first
            return
        self.admitted = True
        self.transport = transport
        server.answers += 1
        server.connections += 1
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0])
            server.peers.record(self.peer, time.monotonic())
        self.answered_drain = server.state.draining
        transport.write(server.state.line())
        try:
            transport.write_eof()
        except OSError:
            # The line was sent and the peer already reset the connection (HAProxy may close a check that
            # way as soon as it has read the line): nothing is left to shut.
            transport.abort()
            return
        # Answered: from now on it only waits for the peer to close, so it is the first to make room.
        server.budget.evictable(self)
        self.timer = asyncio.get_running_loop().call_later(server.linger, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # agent-send or garbage: nothing here changes the answer

    def eof_received(self) -> bool:
        return False  # the peer closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
        # HAProxy closes once it has read the line, so the end of a `drain` answer is when it was heard. A peer
        # that never closes is cut off after `linger` and counts then: it cannot hold a drain wait longer.
        if self.answered_drain and self.peer is not None:
            self.server.peers.heard_drain(self.peer, time.monotonic())


class AgentServer:
    def __init__(self, state: AgentState, linger: float = 5.0, budget: ConnectionBudget | None = None) -> None:
        self.state = state
        self.budget = budget or ConnectionBudget(AGENT_CEILING)  # this port's own: HTTP clients cannot take it
        self.linger = linger
        self.answers = 0  # connections answered since the sidecar started
        self.connections = 0  # answered, not closed yet
        self.peers = AgentPeers()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Binds and starts answering; the port (useful with port 0)."""
        self.server = await self.budget.listen(lambda: _AgentConnection(self), host, port)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
