"""The sidecar's control socket: a unix socket only the sidecar container's own user can reach.

It carries one command, `drain`, sent by `candor sidecar drain` (the sidecar container's preStop hook).
Being able to connect is the credential: the socket lives in a directory mounted into the sidecar container
only (never the state volume the app can write), the socket file is mode 0600, and the peer's uid (from the
kernel, SO_PEERCRED) must be the sidecar's own. So only a process started in the sidecar container — the
kubelet's preStop exec at termination, or someone with `pods/exec`, who could kill the pod anyway — can
begin a drain. Nothing on a TCP port can. The same directory keeps the agent's admin word (see
admin_word), out of the app's reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from candor_sidecar.control_client import ControlError, send_command

log = logging.getLogger("candor.sidecar.control")

__all__ = ["ControlError", "ControlServer", "send_command"]  # the client half lives in control_client

MAX_LINE = 64  # bytes of one command
DEADLINE = 2.0  # seconds a client has to send its command


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket, as the kernel recorded it at connect."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", data)
    return int(uid)


class _ControlConnection(asyncio.Protocol):
    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None
        self.refusal: str | None = None  # answered once the command arrived, so the client reads it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid != os.getuid():
            log.warning("control socket: refused a connection from uid %s (only uid %d may drain)", uid, os.getuid())
            self.refusal = f"refused: uid {uid} is not the sidecar's uid {os.getuid()}"
        self.timer = asyncio.get_running_loop().call_later(DEADLINE, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.buffer += data
        if b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                self._reply("refused: command too long")
            return
        if self.refusal is not None:
            self._reply(self.refusal)
            return
        command = self.buffer.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        handler = self.server.commands.get(command)
        if handler is None:
            known = ", ".join(sorted(self.server.commands))
            self._reply(f"refused: unknown command {command[:MAX_LINE]!r}; known: {known}")
            return
        self._reply(handler())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def _reply(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(text.encode("ascii", "replace") + b"\n")
            self.transport.close()


class ControlServer:
    """Listens on a unix socket; `commands` maps a command word to what answers it (one line)."""

    def __init__(self, path: str, commands: dict[str, Callable[[], str]]) -> None:
        self.path = path
        self.commands = commands
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a sidecar before this one in the same pod (the directory outlives restarts)
        # The socket is created 0600 from the start: no moment at which another user could connect.
        previous = os.umask(0o177)
        try:
            self.server = await asyncio.get_running_loop().create_unix_server(
                lambda: _ControlConnection(self), str(path))
        finally:
            os.umask(previous)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
