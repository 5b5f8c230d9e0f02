"""Which replica kopf's peering leaves active, as the operator's metric reports it."""

from __future__ import annotations

import datetime

from candor_operator.peering import replica_is_active

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: float = 1.0, lifetime: int = 60) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_the_highest_live_priority_is_active_and_equal_priorities_pause_both() -> None:
    peers = {"a": peer(100), "b": peer(200)}
    assert replica_is_active(peers, "b", 200, NOW)
    assert not replica_is_active(peers, "a", 100, NOW)
    assert not replica_is_active({"a": peer(100), "b": peer(100)}, "a", 100, NOW)
    assert replica_is_active({}, "a", 100, NOW)  # alone (or not listed yet)


def test_an_expired_or_malformed_peer_does_not_pause_anyone() -> None:
    assert replica_is_active({"a": peer(100), "b": peer(200, seconds_ago=61)}, "a", 100, NOW)
    assert replica_is_active({"a": peer(100), "b": peer(200, lifetime=0)}, "a", 100, NOW)
    assert replica_is_active({"a": peer(100), "b": {"priority": 300}}, "a", 100, NOW)
