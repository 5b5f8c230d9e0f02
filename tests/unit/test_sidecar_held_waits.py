"""The caps on held /drain/wait requests: per source address and in all; a slot comes back when its wait ends."""

from __future__ import annotations

from candor_sidecar.drain.held_waits import HeldWaits


def test_waits_are_capped_per_address_and_in_all() -> None:
    waits = HeldWaits(per_address=2, total=3)
    assert waits.take("10.0.0.1") is None and waits.take("10.0.0.1") is None
    assert waits.take("10.0.0.1") == "2 waits from 10.0.0.1 are held already"
    assert waits.take("10.0.0.2") is None
    assert waits.take("10.0.0.3") == "3 waits are held already"
    assert (waits.held, waits.refused) == (3, 2)
    waits.give_back("10.0.0.1")
    assert waits.take("10.0.0.3") is None  # the slot came back
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        waits.give_back(address)
    assert waits.held == 0 and waits._by_address == {}  # nothing kept for an address with no wait
