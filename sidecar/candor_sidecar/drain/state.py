"""Where a drain stands: whether it has begun and since when, and how the wait for each load balancer that
was polling the agent ended (DrainEnd), true whatever the ingress controller does:
- HEARD: it read `drain` from the agent after the drain began (a controller that keeps the server until
  HAProxy's agent says so; haproxy-ingress, sometimes).
- REMOVED: it stopped both polling the agent and checking `/health` (its last check came no later than
  one poll interval and CHECK_SLACK after its last poll): the server was re-addressed, removed or put in MAINT by the
  controller (haproxytech drops a terminating endpoint before HAProxy's next poll), or that HAProxy is gone.
  It sends no new requests either way.
- SILENT: it stopped polling the agent but was still seen checking `/health` where a poll was due, or was
  never seen checking it: it may still route here (its agent check disabled?), and it was not told.
- TIMED_OUT: still polling, not yet told, when the wait gave up (drain.maxWait, or the grace period's end).

Pure bookkeeping on a clock (no event loop), so every case is tested with a fake one.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from candor_sidecar.agent_server import AgentPeers

CHECK_SLACK = 0.5  # seconds a peer's last /health check may be recorded after its last poll's interval
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
        """A peer that polled within this long is still polling; one that did not has stopped.

        One poll interval and a second of lateness. HAProxy polls the agent on a fixed timer (`agent-inter`
        after the previous check ended), so a peer still polling is back within an interval plus the
        check's own duration; a second covers a loaded HAProxy or host. A second interval would wait on
        every peer that stopped polling (haproxytech re-addresses a terminating pod's slot at once), and so
        delay each app's SIGTERM, for little: a peer wrongly given up on (one that polls late) routes as
        before until its poll, so at worst a request meets the app's departure, and the rendered backend
        retries it on another server (`retry-on conn-failure`, and `empty-response` for idempotent methods,
        with `option redispatch`).
        """
        return self.poll_interval + 1.0

    @property
    def lookback(self) -> float:
        """How long before the drain began a peer's last poll still makes it one of the drain's load balancers:
        the window, plus the START_WAIT the sidecar's own preStop hook may take to begin the drain. A
        controller acts on the same deletion as the kubelet's hooks, often first (haproxytech re-addresses
        the slot at once), so a peer polling when the pod was deleted is counted (as removed or silent, it
        adds no wait) however late the hook began."""
        return self.window + START_WAIT

    @property
    def wait_bound(self) -> float:
        """A wait never outlasts max_wait, nor leaves the app less than 2 s of its grace period for SIGTERM."""
        return max(0.0, min(self.max_wait, self.grace_period - 2.0))

    @property
    def lift_after(self) -> float:
        return self.grace_period + max(LIFT_MARGIN, self.grace_period / 4)

    @property
    def longest_request(self) -> float:
        """How long the HTTP server must let a /drain/wait run: a composed preStop sleep (`atLeast`) is cut to
        the grace period, with a margin for the drain's own wait."""
        return self.grace_period + 10.0


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


class DrainEnd(Enum):
    """How the wait for one load balancer ended (see the module docstring)."""

    HEARD = "heard"
    REMOVED = "removed"
    SILENT = "silent"
    TIMED_OUT = "timed-out"


@dataclass(frozen=True)
class PeerEnd:
    """One load balancer of a drain: its source address, how its wait ended, and its last agent poll."""

    address: str
    end: DrainEnd
    last_poll: float  # monotonic


@dataclass(frozen=True)
class DrainTally:
    """The peers of a drain at one moment, by address: heard it, removed the server (stopped polling and
    checking), went silent (stopped polling only), or not heard yet while still polling (pending)."""

    heard: tuple[str, ...]
    removed: tuple[str, ...]
    silent: tuple[str, ...]
    pending: tuple[str, ...]

    @classmethod
    def of(cls, ends: tuple[PeerEnd, ...]) -> DrainTally:
        def which(kind: DrainEnd) -> tuple[str, ...]:
            return tuple(end.address for end in ends if end.end is kind)

        return cls(which(DrainEnd.HEARD), which(DrainEnd.REMOVED), which(DrainEnd.SILENT), which(DrainEnd.TIMED_OUT))

    @property
    def outcome(self) -> str:
        """How a drain that ended now ended, by its least reassuring peer: `timeout` (one still polling had
        not heard it), `silent` (one stopped asking the agent but may still route here), `removed` (every
        peer heard it or took the server out), `heard` (every peer heard it), or `unpolled` (none polled)."""
        if self.pending:
            return "timeout"
        if self.silent:
            return "silent"
        if self.removed:
            return "removed"
        return "heard" if self.heard else "unpolled"


class Drain:
    """Whether a drain has begun and since when; which peers have heard it. Lives on the event loop.

    `checkers`: the source addresses that asked `/health` and when (kept by the HTTP side), to tell a peer
    that stopped routing here (REMOVED) from one that only stopped asking the agent (SILENT).
    """

    def __init__(self, peers: AgentPeers, times: DrainTimes, clock: Callable[[], float] = time.monotonic,
                 checkers: AgentPeers | None = None) -> None:
        self.peers = peers
        self.checkers = checkers
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

    def ends(self, now: float | None = None) -> tuple[PeerEnd, ...]:
        """How the wait for each load balancer of this drain ended (or stands), by address.

        Its load balancers: every address that polled the agent within `lookback` before the drain began, or
        since. Called when a wait returns; a peer still pending then counts as TIMED_OUT.
        """
        now = self.clock() if now is None else now
        began = self.began_at
        if began is None:
            return ()
        window, interval = self.times.window, self.times.poll_interval
        checks = self.checkers.last_poll() if self.checkers is not None else {}
        ends = []
        for address, last_poll in sorted(self.peers.last_poll().items()):
            if last_poll < began - self.times.lookback:
                continue  # had stopped polling before this pod's deletion
            heard = self.peers.heard_drain_at(address)
            if heard is not None and heard >= began:
                end = DrainEnd.HEARD
            elif now - last_poll <= window:
                end = DrainEnd.TIMED_OUT
            else:
                checked = checks.get(address)
                # Half a second of slack: the sidecar records a check when its loop reads it, and in its
                # few-millicore cgroup on a busy node that can come late for a check sent just before the
                # controller took the server out.
                still_checking = checked is None or checked > last_poll + interval + CHECK_SLACK
                end = DrainEnd.SILENT if still_checking else DrainEnd.REMOVED
            ends.append(PeerEnd(address, end, last_poll))
        return tuple(ends)

    def tally(self, now: float | None = None) -> DrainTally:
        return DrainTally.of(self.ends(now))

    def describe(self, state: WaitState, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        if not state.began:
            return "no drain began"
        assert self.began_at is not None
        since = f"{now - self.began_at:.2f}s after the drain began"
        if state.done:
            ends = self.ends(now)
            told = [end.address for end in ends if end.end is DrainEnd.HEARD]
            text = f"drain heard by {len(told)} load balancer(s) {', '.join(told)}".rstrip()
            for kind, meaning in ((DrainEnd.REMOVED, "stopped polling and checking: removed"),
                                  (DrainEnd.SILENT, "stopped polling the agent only: silent")):
                others = [end.address for end in ends if end.end is kind]
                if others:
                    text += f"; {meaning} by {len(others)}: {', '.join(others)}"
            return f"{text} {since}"
        return f"not heard yet by {', '.join(sorted(state.pending))} {since}"
