"""What the drains of this sidecar's life did, for /metrics: how long each took and how it ended.

A drain ends when every load balancer that was polling the agent has heard `drain` or has been given up
on: it stopped polling the agent and checking `/health` (removed: a controller re-addressed or removed
the server, or the replica left), it stopped polling only (silent), or it still had not heard it when
`drain.maxWait` ran out (timeout). A pod normally drains once, just
before it goes, so these series are read in its final scrape (or summed over a Deployment's pods).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from candor_sidecar.drain.state import DrainTally
from candor_sidecar.exposition import Family

# Seconds: a drain normally takes about one agent poll interval (default 2 s), never more than maxWait.
BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
OUTCOMES = ("heard", "removed", "silent", "timeout", "unpolled")


@dataclass
class DrainHistory:
    counts: dict[str, list[int]] = field(
        default_factory=lambda: {outcome: [0] * (len(BUCKETS) + 1) for outcome in OUTCOMES})
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0.0))
    peers_heard: int = 0
    peers_removed: int = 0
    peers_silent: int = 0
    peers_timed_out: int = 0

    def record(self, seconds: float, tally: DrainTally) -> None:
        outcome = tally.outcome
        bucket = next((index for index, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))
        self.counts[outcome][bucket] += 1
        self.sums[outcome] += seconds
        self.peers_heard += len(tally.heard)
        self.peers_removed += len(tally.removed)
        self.peers_silent += len(tally.silent)
        self.peers_timed_out += len(tally.pending)

    def families(self, waits_held: int, waits_refused: int) -> Iterator[Family]:
        seconds = Family("candor_drain_seconds", "Drains, from the agent's first `drain` until every polling load "
                         "balancer heard it or was given up on, by how they ended.", "histogram")
        for outcome in OUTCOMES:
            seconds.add_histogram(BUCKETS, self.counts[outcome], self.sums[outcome], [("outcome", outcome)])
        yield seconds
        heard = Family("candor_drain_peers_heard", "Load balancers that heard a drain (once per drain).", "counter")
        heard.add(self.peers_heard)
        yield heard
        given_up = Family("candor_drain_peers_given_up", "Load balancers a drain stopped waiting for: took the "
                          "server out (removed), stopped polling only (silent) or not heard within drain.maxWait "
                          "(timeout).", "counter")
        given_up.add(self.peers_removed, [("reason", "removed")])
        given_up.add(self.peers_silent, [("reason", "silent")])
        given_up.add(self.peers_timed_out, [("reason", "timeout")])
        yield given_up
        held = Family("candor_drain_waits", "/drain/wait requests held now.", "gauge")
        held.add(waits_held)
        yield held
        refused = Family("candor_drain_waits_refused", "/drain/wait requests answered at once: too many held "
                         "from their address or in all.", "counter")
        refused.add(waits_refused)
        yield refused
