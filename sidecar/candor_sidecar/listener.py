"""The listening sockets of the agent and HTTP ports, and the blocking accept loop both serve from."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("candor.sidecar.listener")


def listen_tcp(host: str, port: int, backlog: int, *, defer_accept: bool = False) -> socket.socket:
    """A bound, listening TCP socket (IPv6 when the host has a colon); closed again if binding fails."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if defer_accept:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def accept_connections(sock: socket.socket, is_closed: Callable[[], bool], what: str) -> Iterator[socket.socket]:
    """Accepted connections until the server closes; a failed accept (e.g. out of file descriptors) is
    logged and retried after 100 ms rather than ending the server."""
    while not is_closed():
        try:
            conn, _ = sock.accept()
        except OSError as error:
            if is_closed():
                return
            log.warning("%s accept failed: %s; pausing 100ms", what, error)
            time.sleep(0.1)
            continue
        yield conn
