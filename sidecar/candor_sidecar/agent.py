"""HAProxy agent-check: one line per TCP connection, answered at once from state kept in the background.

The seed's example agent samples the CPU for a second on every connection; this one only formats a line
from what the evaluation loop last decided, so answering costs microseconds and never blocks.
Protocol words (HAProxy `agent-check`): `up`, `down`, `drain`, `maint`, `ready`, `N%`, `maxconn:N`,
and a free-text reason after `#`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

READY_WINDOW = 30.0  # seconds to keep saying `ready` after maintenance ends (and after start)
LINGER = 2.0  # a client that neither reads nor closes is cut off after this long


class AgentState:
    """What the agent says, updated by the evaluation loop and by signals; `line()` formats it."""

    def __init__(self, slow_start: float, max_conn: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_start = slow_start
        self.max_conn = max_conn
        self.clock = clock
        now = clock()
        self.ramp_from = now  # new pods ramp too: HAProxy's own slowstart skips new servers
        self.ready_until = now + READY_WINDOW
        self.failing = False
        self.reason = ""
        self.maintenance = False
        self.draining = False
        self.answers = 0

    def update(self, failing: bool, reason: str, maintenance: bool) -> None:
        now = self.clock()
        if self.failing and not failing:
            self.ramp_from = now  # recovered: traffic comes back slowly
        if self.maintenance and not maintenance:
            self.ramp_from = now
            self.ready_until = now + READY_WINDOW
        self.failing, self.reason, self.maintenance = failing, reason, maintenance

    def drain(self) -> None:
        self.draining = True

    def weight_percent(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        if self.slow_start <= 0:
            return 100
        elapsed = now - self.ramp_from
        return max(1, min(100, math.floor(100 * elapsed / self.slow_start)))

    def word(self) -> str:
        if self.draining:
            return "drain"
        if self.maintenance:
            return "maint"
        if self.failing:
            return "down"
        return "up"

    def line(self, now: float | None = None) -> bytes:
        now = self.clock() if now is None else now
        if self.draining:
            text = "drain # sidecar terminating"
        elif self.maintenance:
            text = "maint # annotation candor.io/maintenance=true"
        elif self.failing:
            text = f"down # {_clean(self.reason) or 'unhealthy'}"
        else:
            words = ["ready"] if now < self.ready_until else []
            words += ["up", f"{self.weight_percent(now)}%"]
            if self.max_conn is not None:
                words.append(f"maxconn:{self.max_conn}")
            text = " ".join(words)
        return text.encode("ascii", "replace") + b"\n"


def _clean(reason: str) -> str:
    # One line only: a newline inside the reason would end the reply early.
    return " ".join(reason.split())


class AgentProtocol(asyncio.Protocol):
    """Writes the line as soon as the connection is made; whatever HAProxy sends (agent-send) is ignored."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.state.answers += 1
        transport.write(self.state.line())
        if transport.can_write_eof():
            transport.write_eof()  # half-close: we are done; the peer reads the line, then closes
        self.timer = asyncio.get_running_loop().call_later(LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the peer is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def start_agent_server(state: AgentState, host: str, port: int, backlog: int = 4096) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AgentProtocol(state), host, port, backlog=backlog, reuse_address=True)
