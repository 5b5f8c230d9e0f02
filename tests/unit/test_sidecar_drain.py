"""Who a drain still waits for, from the agent's record of its peers (times given, no clock read)."""

from __future__ import annotations

from candor_sidecar.agent_server import AgentPeers
from candor_sidecar.drain.state import Drain, DrainEnd, DrainTally, DrainTimes

TIMES = DrainTimes(poll_interval=2.0, max_wait=10.0, grace_period=30.0)  # window: 2 s + 1 s = 3 s


def _drain(now: list[float]) -> tuple[Drain, AgentPeers]:
    peers = AgentPeers()
    return Drain(peers, TIMES, clock=lambda: now[0]), peers


def test_nothing_is_done_before_the_drain_begins() -> None:
    now = [100.0]
    drain, peers = _drain(now)
    peers.record("10.0.0.1", 99.0)
    state = drain.state()
    assert not state.began and not state.done
    assert drain.describe(state) == "no drain began"


def test_every_polling_peer_must_hear_drain_after_it_began() -> None:
    now = [100.0]
    drain, peers = _drain(now)
    peers.record("10.0.0.1", 99.0)
    peers.record("10.0.0.2", 98.5)
    peers.heard_drain("10.0.0.2", 98.6)  # heard an earlier drain (lifted since): does not count
    assert drain.begin("preStop") and not drain.begin("preStop")
    state = drain.state()
    assert state.pending == {"10.0.0.1": 102.0, "10.0.0.2": 101.5}
    assert state.next_change() == 101.5
    now[0] = 101.0
    peers.record("10.0.0.1", 101.0)
    peers.heard_drain("10.0.0.1", 101.01)
    assert list(drain.state().pending) == ["10.0.0.2"]
    peers.record("10.0.0.2", 101.5)
    peers.heard_drain("10.0.0.2", 101.51)
    state = drain.state()
    assert state.done
    assert drain.describe(state) == ("drain heard by 2 load balancer(s) 10.0.0.1, 10.0.0.2 "
                                     "1.00s after the drain began")


def test_a_peer_silent_for_the_window_has_stopped_polling_and_is_not_waited_for() -> None:
    now = [100.0]
    drain, peers = _drain(now)
    peers.record("10.0.0.9", 90.0)  # silent for 10 s before the drain: long gone
    peers.record("10.0.0.1", 99.0)
    drain.begin("preStop")
    assert list(drain.state().pending) == ["10.0.0.1"]
    # HAProxy polls every interval on a fixed timer: its poll was due at 101.0; a second late, it has stopped.
    assert not drain.state(now=102.0).done
    assert drain.state(now=102.01).done  # 3 s without a poll: it took the server out of its checks


def test_the_window_is_one_poll_interval_and_a_second() -> None:
    assert TIMES.window == 3.0
    assert DrainTimes(poll_interval=1.0).window == 2.0  # agent-inter 1 s: given up on 2 s after its last poll


def test_a_peer_that_stopped_just_before_the_drain_is_counted_and_not_waited_for() -> None:
    """A controller acts on the deletion as the kubelet's hooks do, often first: its HAProxy's last poll may
    precede the drain by more than the window, and it is still one of the drain's load balancers."""
    now = [100.0]
    drain, peers, checkers = _drain_with_checkers(now)
    peers.record("10.0.0.2", 96.5)  # polled at the deletion's moment; re-addressed since (3.5 s: past the window)
    checkers.record("10.0.0.2", 96.0)
    peers.record("10.0.0.9", 91.0)  # stopped 9 s before the drain: more than the hook's 5 s and the window
    drain.begin("preStop")
    assert drain.state().done  # nothing to wait for
    assert [(end.address, end.end) for end in drain.ends()] == [("10.0.0.2", DrainEnd.REMOVED)]
    assert TIMES.lookback == 8.0


def test_a_new_peer_counts_once_it_heard_the_drain() -> None:
    now = [100.0]
    drain, peers = _drain(now)
    drain.begin("SIGTERM")
    assert drain.state().done  # nobody polls: nothing to wait for
    peers.record("10.0.0.3", 100.5)  # connected after the drain began, not closed yet
    assert list(drain.state(now=100.5).pending) == ["10.0.0.3"]
    peers.heard_drain("10.0.0.3", 100.6)
    assert drain.state(now=100.6).done


def test_lifting_forgets_the_drain() -> None:
    now = [100.0]
    drain, _peers = _drain(now)
    drain.begin("preStop")
    drain.lift()
    assert not drain.active and not drain.state().began
    assert drain.begin("preStop")


def test_the_bounds_follow_the_grace_period() -> None:
    assert TIMES.wait_bound == 10.0 and TIMES.lift_after == 37.5  # grace + a quarter of it (at least 5 s)
    short = DrainTimes(poll_interval=2.0, max_wait=10.0, grace_period=5.0)
    assert short.wait_bound == 3.0  # the app keeps 2 s of its grace period for SIGTERM
    assert short.lift_after == 10.0
    assert DrainTimes(grace_period=1.0).wait_bound == 0.0


def test_a_heard_drain_from_an_unknown_address_is_ignored() -> None:
    peers = AgentPeers(limit=1)
    calls: list[int] = []
    peers.on_heard(lambda: calls.append(1))
    peers.heard_drain("10.0.0.1", 1.0)
    assert peers.heard_drain_at("10.0.0.1") is None and not calls
    peers.record("10.0.0.1", 1.0)
    peers.heard_drain("10.0.0.1", 1.5)
    assert peers.heard_drain_at("10.0.0.1") == 1.5 and calls == [1]
    peers.record("10.0.0.2", 2.0)  # forgets 10.0.0.1, and what it heard
    assert peers.heard_drain_at("10.0.0.1") is None


# --- how each load balancer's wait ended ---------------------------------------------------------------

def _drain_with_checkers(now: list[float]) -> tuple[Drain, AgentPeers, AgentPeers]:
    peers, checkers = AgentPeers(), AgentPeers()
    return Drain(peers, TIMES, clock=lambda: now[0], checkers=checkers), peers, checkers


def test_each_peer_ends_heard_removed_silent_or_timed_out() -> None:
    now = [100.0]
    drain, peers, checkers = _drain_with_checkers(now)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        peers.record(address, 99.0)
        checkers.record(address, 98.0)
    peers.record("10.0.0.5", 99.0)  # never seen checking /health
    peers.record("10.0.0.9", 90.0)  # stopped polling long before the drain: not one of its load balancers
    drain.begin("preStop")
    # .1 keeps polling and reads `drain`.
    peers.record("10.0.0.1", 101.0)
    peers.heard_drain("10.0.0.1", 101.0)
    # .2 stops polling and checking at once: the controller took the server out (haproxytech does).
    # .3 stops polling the agent but keeps checking /health where its polls were due: it may still route here.
    checkers.record("10.0.0.3", 102.5)
    # .4 keeps polling without hearing: it is still pending when the wait gives up.
    peers.record("10.0.0.4", 104.5)
    # .5 stops polling; nothing says whether it stopped routing: silent.
    ends = {end.address: end.end for end in drain.ends(now=105.0)}
    assert ends == {"10.0.0.1": DrainEnd.HEARD, "10.0.0.2": DrainEnd.REMOVED, "10.0.0.3": DrainEnd.SILENT,
                    "10.0.0.4": DrainEnd.TIMED_OUT, "10.0.0.5": DrainEnd.SILENT}


def test_a_drain_ended_by_removal_says_so() -> None:
    now = [100.0]
    drain, peers, checkers = _drain_with_checkers(now)
    peers.record("10.0.0.2", 99.0)
    checkers.record("10.0.0.2", 99.5)  # its last check, before its next poll was due (101.0): then nothing
    drain.begin("preStop")
    assert not drain.state(now=102.0).done  # one interval and a second after its last poll
    state = drain.state(now=102.5)
    assert state.done
    assert drain.describe(state, now=102.5) == ("drain heard by 0 load balancer(s); stopped polling and checking: "
                                                "removed by 1: 10.0.0.2 2.50s after the drain began")
    assert [(end.address, end.end, end.last_poll) for end in drain.ends(now=102.5)] == [
        ("10.0.0.2", DrainEnd.REMOVED, 99.0)]


def test_a_tally_says_who_heard_who_went_silent_and_who_is_still_awaited() -> None:
    now = [100.0]
    drain, peers = _drain(now)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        peers.record(address, 99.0)
    peers.record("10.0.0.9", 90.0)  # had stopped polling long before the drain: not one of its peers
    assert drain.tally() == DrainTally((), (), (), ())  # no drain
    drain.begin("preStop")
    peers.record("10.0.0.1", 101.0)
    peers.heard_drain("10.0.0.1", 101.0)
    now[0] = 103.5  # 10.0.0.2 and .3 last polled 4.5 s ago: past the 3 s window
    peers.record("10.0.0.3", 103.0)
    tally = drain.tally()
    # No /health checks recorded for .2: it stopped polling, and nothing says it stopped routing here.
    assert tally == DrainTally(("10.0.0.1",), (), ("10.0.0.2",), ("10.0.0.3",))
    assert tally.outcome == "timeout"
    assert DrainTally(("a",), ("c",), ("b",), ()).outcome == "silent"
    assert DrainTally(("a",), ("c",), (), ()).outcome == "removed"
    assert DrainTally(("a",), (), (), ()).outcome == "heard"
    assert DrainTally((), (), (), ()).outcome == "unpolled"
