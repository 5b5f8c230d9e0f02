"""How many `/drain/wait` requests may be held at once: in all, and from one source address.

A held wait costs a connection slot and a few KiB until its drain ends, so it is what a client would
multiply to take the HTTP port or the sidecar's memory. The kubelet holds one per app container of a
terminating pod, all from the node's address; a load of them from one address, or more than a pod ever
needs in all, is somebody else. Over either cap a wait is answered at once instead of held.
"""

from __future__ import annotations

PER_ADDRESS = 16  # more app containers than any pod has
TOTAL = 128


class HeldWaits:
    def __init__(self, per_address: int = PER_ADDRESS, total: int = TOTAL) -> None:
        self.per_address = per_address
        self.total = total
        self.held = 0
        self.refused = 0
        self._by_address: dict[str, int] = {}

    def take(self, address: str) -> str | None:
        """Take a slot for `address`; None when taken, else why not (for the answer)."""
        if self._by_address.get(address, 0) >= self.per_address:
            self.refused += 1
            return f"{self.per_address} waits from {address or 'this address'} are held already"
        if self.held >= self.total:
            self.refused += 1
            return f"{self.total} waits are held already"
        self._by_address[address] = self._by_address.get(address, 0) + 1
        self.held += 1
        return None

    def give_back(self, address: str) -> None:
        left = self._by_address.get(address, 0) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)
        self.held -= 1
