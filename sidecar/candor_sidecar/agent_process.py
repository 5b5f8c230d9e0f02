"""The agent-check listener, served by a process of its own forked from the sidecar at start.

Measured (bench/sidecar.py): in one process, the sidecar's evaluation (reading every journal, a few ms of
Python each second) and /health held the interpreter lock often enough to add 1-2 ms to the agent's p99
at 2,000 connections/s. The forked child has a lock of its own. It only accepts, reads the state the
sidecar publishes in shared memory, formats the line (the weight ramp follows the clock, which both
processes share) and answers: no event loop, no task, no timer per connection, so idle, half-open and
never-reading clients cost nothing. Whatever the peer sent (HAProxy's agent-send, garbage) is drained
first, so closing sends a FIN, not a reset.

The child ignores SIGTERM and SIGINT (the sidecar decides when answering stops: it says drain until it
exits), is killed by close(), and dies with the sidecar whatever kills it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import mmap
import os
import resource
import signal
import socket
import struct
import time

from candor_sidecar.agent import AgentState
from candor_sidecar.listener import accept_connections, listen_tcp

log = logging.getLogger("candor.sidecar.agent")

# sequence (odd while the sidecar writes), answers (counted by the child), payload length; then the payload
HEADER = struct.Struct("<QQI")
SEQUENCE, ANSWERS, LENGTH = 0, 8, 16
SIZE = 16384
REASON_LIMIT = 1024  # characters (6 bytes each at worst in JSON): the payload always fits, a longer one is cut
FIELDS = ("failing", "reason", "maintenance", "draining", "ramp_from", "ready_until")
PR_SET_PDEATHSIG = 1


class SharedAgentState:
    """The agent's state in anonymous shared memory: one writer (the sidecar), one reader (the child)."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, SIZE)  # MAP_SHARED | MAP_ANONYMOUS: the forked child sees every write
        self._sequence = 0

    def publish(self, state: AgentState) -> None:
        fields = {name: getattr(state, name) for name in FIELDS}
        fields["reason"] = fields["reason"][:REASON_LIMIT]
        payload = json.dumps(fields).encode()
        self._sequence += 1  # odd: a reader that sees it (or sees it change) keeps what it had
        struct.pack_into("<Q", self._memory, SEQUENCE, self._sequence)
        self._memory[HEADER.size: HEADER.size + len(payload)] = payload
        struct.pack_into("<I", self._memory, LENGTH, len(payload))
        self._sequence += 1
        struct.pack_into("<Q", self._memory, SEQUENCE, self._sequence)

    def published(self) -> bool:
        sequence: int = struct.unpack_from("<Q", self._memory, SEQUENCE)[0]
        return sequence > 0

    def refresh(self, state: AgentState, seen: int) -> int:
        """Copy a newer complete publication into `state`; the sequence now reflected in it."""
        sequence: int = struct.unpack_from("<Q", self._memory, SEQUENCE)[0]
        if sequence == seen or sequence % 2:
            return seen
        (length,) = struct.unpack_from("<I", self._memory, LENGTH)
        payload = self._memory[HEADER.size: HEADER.size + length]
        if struct.unpack_from("<Q", self._memory, SEQUENCE)[0] != sequence:
            return seen  # rewritten while we read: the next connection gets it
        for name, value in json.loads(payload).items():
            setattr(state, name, value)
        return sequence

    def answers(self) -> int:
        count: int = struct.unpack_from("<Q", self._memory, ANSWERS)[0]
        return count

    def count_answers(self, count: int) -> None:
        struct.pack_into("<Q", self._memory, ANSWERS, count)


class AgentServer:
    """Forks the answering child at once; it answers from the first state published.

    `state` is published now, and after every change; with `wait_for_update` only from its next update
    on (the sidecar forks before its first evaluation, while it has no other thread yet). The sidecar keeps
    the listening socket without accepting on it, so a child that died can be replaced (`ensure_running`).
    """

    def __init__(self, state: AgentState, sock: socket.socket, wait_for_update: bool = False) -> None:
        self.port: int = sock.getsockname()[1]
        self.shared = SharedAgentState()
        self._state = state
        self.listener = sock
        self._closed = False
        self.pid = self._fork()
        state.on_change(lambda: self.shared.publish(state))
        if not wait_for_update:
            self.shared.publish(state)

    def _fork(self) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child never returns into the sidecar's code
            status = 0
            try:
                _answer_forever(self._state, self.listener, self.shared, parent)
            except BaseException:
                log.exception("the agent process failed")
                status = 1
            finally:
                os._exit(status)
        return pid

    @property
    def answers(self) -> int:
        """Connections answered since the sidecar started."""
        return self.shared.answers()

    def ensure_running(self) -> bool:
        """Replace the agent process if it died; False when it had to be replaced."""
        if self._closed:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return True
        log.error("the agent process %d died (%s); starting another", self.pid, _describe(status))
        self.pid = self._fork()
        return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.listener.close()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _keep_only(listener: int) -> None:
    """Close every inherited descriptor but stdio and the listener: a copy of an HTTP connection would keep
    it open after the sidecar closed it, and a copy of a journal the reader holds would keep its flock."""
    os.closerange(3, listener)
    os.closerange(listener + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _die_with(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the sidecar died before prctl took effect
        os._exit(0)


def _answer_forever(state: AgentState, sock: socket.socket, shared: SharedAgentState, parent: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # an event loop's self-pipe is the sidecar's, not ours
    _keep_only(sock.fileno())
    _die_with(parent)
    gc.freeze()  # what the child inherited lives until it exits: keep it out of the collector's scans
    while not shared.published():  # never answer before the sidecar's first evaluation
        time.sleep(0.005)
    seen = 0
    # A replacement process continues the count: candor_agent_answers_total never goes backwards.
    for answered, conn in enumerate(accept_connections(sock, lambda: False, "agent"), start=shared.answers() + 1):
        seen = shared.refresh(state, seen)
        shared.count_answers(answered)
        try:
            conn.send(state.line(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536, socket.MSG_DONTWAIT):
                pass
        except OSError:
            pass  # reset by the peer, nothing to drain, ...: we are done with it either way
        finally:
            conn.close()


def start_agent_server(state: AgentState, host: str, port: int, backlog: int = 4096,
                       wait_for_update: bool = False) -> AgentServer:
    """Listen on host:port (errors surface here, in the sidecar) and fork the answering process."""
    return AgentServer(state, listen_tcp(host, port, backlog), wait_for_update)
