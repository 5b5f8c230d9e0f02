"""The drain before termination: the agent says `drain` before the app is told to stop, until HAProxy heard it.

The pod's termination runs every container's preStop hook at once. The sidecar's own hook
(`candor sidecar drain`, over the control socket) begins the drain; each app container's hook is an HTTP
GET of `/drain/wait`, which only waits: it returns once the drain has begun and every load balancer that
was polling this agent has heard `drain` since, and the kubelet sends the app SIGTERM only then.

Who counts as a load balancer still to be told: every source address that polled the agent within
`window` (two poll intervals and a second). One that stops polling for that long has taken the server out
of its checks (MAINT, or the server removed): it sends no new requests either, so it is not waited for.
So a wait normally ends after one poll interval, and never after more than `max_wait`.

A drain begun without a termination behind it (a hand-run `candor sidecar drain`) lifts itself after
`lift_after`: the agent says `ready` again, as after maintenance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from candor_sidecar.agent_server import AgentPeers

START_WAIT = 5.0  # seconds a wait gives the sidecar's own preStop hook to begin the drain (both start together)
# Past the grace period the kubelet has killed the app (after at least 2 s more) and sent the sidecar SIGTERM,
# so a drain still without one then has no termination behind it: it lifts itself this much later.
LIFT_MARGIN = 5.0


@dataclass(frozen=True)
class DrainTimes:
    """The bounds, from the policy (poll interval, max wait) and the pod (termination grace period)."""

    poll_interval: float = 2.0
    max_wait: float = 6.0
    grace_period: float = 30.0

    @property
    def window(self) -> float:
        """A peer that polled within this long is still polling; one that did not has stopped."""
        return 2 * self.poll_interval + 1.0

    @property
    def wait_bound(self) -> float:
        """A wait never outlasts max_wait, nor leaves the app less than 2 s of its grace period for SIGTERM."""
        return max(0.0, min(self.max_wait, self.grace_period - 2.0))

    @property
    def lift_after(self) -> float:
        return self.grace_period + max(LIFT_MARGIN, self.grace_period / 4)


@dataclass(frozen=True)
class WaitState:
    """Where a wait stands at one moment: still to hear it (address -> when it is presumed gone), or done."""

    began: bool
    pending: dict[str, float]

    @property
    def done(self) -> bool:
        return self.began and not self.pending

    def next_change(self) -> float | None:
        """The monotonic time the first pending peer is presumed gone, if any."""
        return min(self.pending.values()) if self.pending else None


@dataclass(frozen=True)
class DrainTally:
    """The peers of a drain at one moment: heard it, stopped polling without hearing it (silent), or not
    heard yet while still polling (pending). A peer counts from the window before the drain began on."""

    heard: tuple[str, ...]
    silent: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def outcome(self) -> str:
        """How a drain that ended now ended: `timeout` (someone still polling had not heard it), `silent`
        (every peer heard it or stopped polling, at least one stopped), `heard` (every peer heard it), or
        `unpolled` (no load balancer polled the agent at all)."""
        if self.pending:
            return "timeout"
        if self.silent:
            return "silent"
        return "heard" if self.heard else "unpolled"


class Drain:
    """Whether a drain has begun and since when; which peers have heard it. Lives on the event loop."""

    def __init__(self, peers: AgentPeers, times: DrainTimes, clock: Callable[[], float] = time.monotonic) -> None:
        self.peers = peers
        self.times = times
        self.clock = clock
        self.began_at: float | None = None
        self.source = ""

    @property
    def active(self) -> bool:
        return self.began_at is not None

    def begin(self, source: str) -> bool:
        """Start draining (False when already draining: the first start counts)."""
        if self.began_at is not None:
            return False
        self.began_at, self.source = self.clock(), source
        return True

    def lift(self) -> None:
        self.began_at, self.source = None, ""

    def state(self, now: float | None = None) -> WaitState:
        now = self.clock() if now is None else now
        began = self.began_at
        if began is None:
            return WaitState(False, {})
        window = self.times.window
        pending = {}
        for address, last_poll in self.peers.last_poll().items():
            heard = self.peers.heard_drain_at(address)
            if heard is not None and heard >= began:
                continue
            if now - last_poll <= window:
                pending[address] = last_poll + window
        return WaitState(True, pending)

    def tally(self, now: float | None = None) -> DrainTally:
        now = self.clock() if now is None else now
        began = self.began_at
        if began is None:
            return DrainTally((), (), ())
        window = self.times.window
        heard, silent, pending = [], [], []
        for address, last_poll in sorted(self.peers.last_poll().items()):
            if last_poll < began - window:
                continue  # had stopped polling before the drain began
            told = self.peers.heard_drain_at(address)
            if told is not None and told >= began:
                heard.append(address)
            elif now - last_poll > window:
                silent.append(address)
            else:
                pending.append(address)
        return DrainTally(tuple(heard), tuple(silent), tuple(pending))

    def describe(self, state: WaitState, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        if not state.began:
            return "no drain began"
        assert self.began_at is not None
        since = f"{now - self.began_at:.2f}s after the drain began"
        if state.done:
            told = sorted(address for address in self.peers.last_poll()
                          if (self.peers.heard_drain_at(address) or -math.inf) >= self.began_at)
            return f"drain heard by {len(told)} load balancer(s) {', '.join(told)} {since}".replace("  ", " ")
        return f"not heard yet by {', '.join(sorted(state.pending))} {since}"
