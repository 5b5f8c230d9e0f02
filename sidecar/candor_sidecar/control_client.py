"""The client half of the sidecar's control socket (candor_sidecar.control): one command, one line back.

Its own module, importing the socket module alone: `candor sidecar drain`, the sidecar container's preStop
hook, runs it in the sidecar's cgroup at every pod's termination, where a CPU request of a few millicores
buys little CPU on a busy node, and each millisecond of its start delays the drain (so the app's SIGTERM).
"""

from __future__ import annotations

import socket


class ControlError(Exception):
    """The control socket could not be reached or refused the command; the message says why."""


def send_command(path: str, command: str, timeout: float = 5.0) -> str:
    """Send one command to a running sidecar; its one-line answer. ControlError if unreachable or refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(command.encode("ascii") + b"\n")
            chunks = []
            while chunk := sock.recv(1024):
                chunks.append(chunk)
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}: is the sidecar running in this container?") from None
        except OSError as error:
            raise ControlError(f"cannot talk to the sidecar at {path}: {error}") from None
    answer = b"".join(chunks).decode("ascii", "replace").strip()
    if not answer or answer.startswith("refused"):
        raise ControlError(answer or f"the sidecar at {path} closed without answering")
    return answer
