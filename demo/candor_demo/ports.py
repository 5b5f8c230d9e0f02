"""Listening ports for the demo's processes, chosen outside the kernel's ephemeral range.

The demo picks a dozen ports seconds before the processes bind them, while Prometheus, HAProxy and the load
generator open hundreds of outgoing connections. Those take their source ports from the ephemeral range, where
`bind(0)` would also pick ours, so a port chosen there can be taken in the meantime. Below that range only
explicit binds compete.
"""

from __future__ import annotations

import random
import socket

_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listen_port() -> int:
    """A port on 127.0.0.1 that is free now, below the ephemeral range, not handed out before by this process."""
    high = _ephemeral_start() - 1
    low = max(1024, high - 12000)
    for _ in range(200):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port on 127.0.0.1 between {low} and {high}")
