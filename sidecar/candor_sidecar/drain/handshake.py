"""The sidecar's side of the drain handshake: it begins a drain (the preStop hook, or SIGTERM), lifts one
that no termination followed, holds each app container's `/drain/wait` until every load balancer polling the
agent has heard it or stopped polling, tells load balancers' `/health` checks from other requests, says where
a drain stands in /health, and counts and times each drain for /metrics and for the pod's `Drained` Event
(its summary left in the container's termination message: candor_sidecar.drain.summary).

Lives on the sidecar's event loop, like the agent it tells to answer `drain`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from candor_sidecar.agent import AgentState
from candor_sidecar.agent_server import AgentPeers
from candor_sidecar.drain.held_waits import HeldWaits
from candor_sidecar.drain.history import DrainHistory
from candor_sidecar.drain.state import START_WAIT, Drain, DrainTimes
from candor_sidecar.drain.summary import DrainSummary
from candor_sidecar.drain.termination_message import TerminationMessage
from candor_sidecar.exposition import Family
from candor_sidecar.health import iso_time
from candor_sidecar.http_server import Request, Response

log = logging.getLogger("candor.sidecar")


class DrainHandshake:
    """`peers`: the agent's pollers, by source address (kept by the agent server); `termination_message`: where
    each drain's summary is left for the operator's Event (None: nowhere)."""

    def __init__(self, agent: AgentState, peers: AgentPeers, times: DrainTimes,
                 termination_message: TerminationMessage | None = None) -> None:
        self.agent = agent
        self.termination_message = termination_message or TerminationMessage(None)
        self._summarized: float | None = None  # began_at of the drain whose summary was left last
        # Who checks /health, by address: a draining peer that stopped that too has removed the server.
        self.checkers = AgentPeers()
        self.drain = Drain(peers, times, checkers=self.checkers)
        peers.on_heard(self.news)
        self.terminating = False  # the sidecar's own SIGTERM received: a drain then never lifts
        self._changed: asyncio.Future[None] | None = None
        self.held_waits = HeldWaits()
        self.history = DrainHistory()
        self._following: asyncio.Task[None] | None = None
        self._lift_timer: asyncio.TimerHandle | None = None

    @property
    def draining(self) -> bool:
        """The agent answers `drain`: begun by the preStop hook, or by SIGTERM."""
        return self.agent.draining

    @property
    def under_way(self) -> bool:
        """A drain has begun (and not lifted): /health?verbose then says how far it got."""
        return self.drain.active

    def saw_health_request(self, request: Request) -> None:
        """A `/health` request: a load balancer's check counts its source address as still checking."""
        if request.peer and "user-agent" not in request.headers:
            # HAProxy's `option httpchk` sends no User-Agent; the kubelet, curl and browsers do.
            self.checkers.record(request.peer, time.monotonic())

    def on_sigterm(self) -> None:
        """The sidecar's own SIGTERM: drain (if the preStop hook has not), and never lift it."""
        self.terminating = True
        if self._lift_timer is not None:
            self._lift_timer.cancel()
            self._lift_timer = None
        self.begin("SIGTERM")

    def families(self) -> Iterator[Family]:
        return self.history.families(self.held_waits.held, self.held_waits.refused)

    def news(self) -> None:
        """Wake every /drain/wait: the drain began or lifted, or a load balancer heard it."""
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    async def _change(self, timeout: float, departed: asyncio.Future[None] | None = None) -> None:
        """Until the drain changes (or `departed` is done, or `timeout`)."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._changed] if departed is None else [self._changed, departed],
                           timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def begin(self, source: str) -> bool:
        began = self.drain.begin(source)
        if not self.agent.draining:
            self.agent.drain()
        self.news()
        if began:
            self._following = asyncio.get_running_loop().create_task(self._follow())
        return began

    async def _follow(self) -> None:
        """Follow a drain until every polling peer heard it or was given up on; count and time it."""
        began = self.drain.began_at
        assert began is not None
        end = began + self.drain.times.wait_bound
        while self.drain.began_at == began:
            now = time.monotonic()
            state = self.drain.state(now)
            if state.done or now >= end:
                break
            next_change = state.next_change()
            await self._change(max(0.0, min(end, next_change or end) - now) + 0.001)
        else:
            return  # lifted before it ended: nothing to count
        now = time.monotonic()
        tally = self.drain.tally(now)
        self.history.record(now - began, tally)
        log.info("drain ended (%s) after %.2fs: heard by %d, removed by %d, stopped polling %d, not heard in time %d",
                 tally.outcome, now - began, len(tally.heard), len(tally.removed), len(tally.silent),
                 len(tally.pending))
        self._summarized = began
        self.termination_message.write(DrainSummary.of(now - began, tally, self.drain.source).message())

    def at_exit(self) -> None:
        """The sidecar exits: a drain still under way (not ended yet) leaves its summary as it stands, its
        load balancers not heard yet counted as not heard in time."""
        began = self.drain.began_at
        if began is None or self._summarized == began:
            return
        now = time.monotonic()
        self._summarized = began
        summary = DrainSummary.of(now - began, self.drain.tally(now), self.drain.source, at_exit=True)
        self.termination_message.write(summary.message())

    def control(self) -> str:
        """`candor sidecar drain`: only a process in the sidecar container reaches it (see control)."""
        if self.terminating:
            return "draining: the sidecar is terminating"
        if not self.begin("preStop"):
            assert self.drain.began_at is not None
            return f"draining already, for {time.monotonic() - self.drain.began_at:.1f}s"
        lift_after = self.drain.times.lift_after
        self._lift_timer = asyncio.get_running_loop().call_later(lift_after, self._lift)
        log.info("drain begun by the preStop hook: the agent answers drain (lifts itself in %.0fs unless SIGTERM "
                 "follows)", lift_after)
        return f"draining: the agent answers drain; lifts itself in {lift_after:.0f}s unless the sidecar is stopped"

    def _lift(self) -> None:
        self._lift_timer = None
        if self.terminating:
            return
        log.warning("drain lifted: no termination followed within %.0fs; the agent answers ready again",
                    self.drain.times.lift_after)
        self.drain.lift()
        self.agent.undrain()
        self.news()

    async def wait(self, request: Request) -> Response:
        """An app container's preStop hook: wait until every polling HAProxy heard `drain`. Changes nothing.

        Waits START_WAIT for the drain to begin (all preStop hooks start together), then until no load
        balancer that is still polling has yet to hear it, at most drain.maxWait; and at least `?atLeast=N`
        seconds (a preStop sleep the app container had, composed into this hook).
        """
        started = time.monotonic()
        times = self.drain.times
        try:
            at_least = _seconds(request.query.get("atLeast"), "atLeast", maximum=times.grace_period)
        except ValueError as error:
            return Response(400, f"{error}\n".encode())
        client = request.client
        address = client.address if client is not None else ""
        refusal = self.held_waits.take(address)
        if refusal is not None:
            log.debug("/drain/wait refused: %s", refusal)
            return Response(429 if "from" in refusal else 503, f"not waiting: {refusal}\n".encode(),
                            headers=[("Candor-Drain", "refused")])
        try:
            departed = client.departed() if client is not None else asyncio.get_running_loop().create_future()
            outcome, text = await self._wait_for(started, at_least, departed)
        finally:
            self.held_waits.give_back(address)
        if outcome == "gone":
            log.debug("/drain/wait: the client left after %.2fs", time.monotonic() - started)
        else:
            log.info("/drain/wait: %s", text)
        return Response(200, f"{text}\n".encode(), headers=[("Candor-Drain", outcome)])

    async def _wait_for(self, started: float, at_least: float,
                              departed: asyncio.Future[None]) -> tuple[str, str]:
        """(outcome, text) of one wait. `atLeast` counts only once a drain has begun: with none under way
        nothing waits longer than START_WAIT; a client that left ends its wait at once."""
        times = self.drain.times
        end = started + times.wait_bound
        start_by = started + min(START_WAIT, times.wait_bound)
        while True:
            now = time.monotonic()
            state = self.drain.state(now)
            if departed.done():
                return "gone", "the client left"
            if state.done or now >= end or (not state.began and now >= start_by):
                break
            until = end if state.began else start_by
            next_change = state.next_change()
            if next_change is not None:
                until = min(until, next_change)
            await self._change(max(0.0, until - now) + 0.001, departed)
        if state.began:
            remaining = started + at_least - time.monotonic()
            if remaining > 0:
                await asyncio.wait([departed], timeout=remaining)
                if departed.done():
                    return "gone", "the client left"
        outcome = "heard" if state.done else ("timeout" if state.began else "no-drain")
        text = self.drain.describe(state, now)
        if outcome == "timeout":
            text += f" (gave up after drain.maxWait {times.wait_bound:g}s)"
        elif outcome == "no-drain":
            text += f" within {min(START_WAIT, times.wait_bound):g}s: not waiting"
        return outcome, text

    def state_note(self) -> str | None:
        """Why the agent answers `drain`, for /health (None: it does not)."""
        if self.terminating:
            return "sidecar terminating: the agent answers drain"
        if self.draining:
            return "pod terminating (preStop): the agent answers drain"
        return None

    def note(self) -> str:
        """Where the drain under way stands, for a human reading /health?verbose."""
        began = self.drain.began_at
        assert began is not None
        now = time.monotonic()
        tally = self.drain.tally(now)
        since = iso_time(time.time() - (now - began))

        def listed(addresses: tuple[str, ...]) -> str:
            return f"{len(addresses)}" + (f" ({', '.join(addresses[:8])}{', …' if len(addresses) > 8 else ''})"
                                          if addresses else "")

        return (f"drain under way since {since} ({now - began:.1f}s, begun by {self.drain.source}): "
                f"heard by {listed(tally.heard)}, waiting for {listed(tally.pending)}, "
                f"removed by {listed(tally.removed)}, stopped polling {listed(tally.silent)}; "
                f"{self.held_waits.held} /drain/wait held")


def _seconds(values: list[str] | None, name: str, maximum: float) -> float:
    """A whole number of seconds from a query parameter (0 when absent), cut to `maximum` (the kubelet would)."""
    if not values:
        return 0.0
    value = values[-1]
    if not value.isdigit() or len(value) > 9:
        raise ValueError(f"{name}: expected whole seconds (0 or more), got {value[:32]!r}")
    return min(float(value), maximum)
