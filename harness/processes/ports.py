"""Free TCP ports on 127.0.0.1 for real processes started by tests.

The demo's chooser is used: it picks below the kernel's ephemeral range, so the many outgoing connections
of HAProxy, Prometheus and load loops cannot take a port between choosing it and binding it.
"""

from __future__ import annotations

import socket

from candor_demo.ports import listen_port


def free_port() -> int:
    """A port nothing listens on right now, below the ephemeral range, not handed out before in this process."""
    return listen_port()


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` now (a server may announce itself, by a
    journal or a health endpoint, before it has bound its port)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
