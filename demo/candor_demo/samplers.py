"""Background samplers with sub-second resolution: HAProxy's view of each server, and each sidecar's agent answer.

Prometheus scrapes HAProxy too (its built-in exporter), but every 15 s; the check "HAProxy took instance 2 out
within agent-inter + 1 s" needs a finer clock, so the stats socket is polled here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from candor_demo.cpu_cgroup import CpuCgroup
from candor_demo.haproxy_process import HAProxyProcess


@dataclass(frozen=True)
class ServerSample:
    at: float  # monotonic
    server: str
    status: str  # HAProxy's status text, e.g. "UP", "DOWN", "DRAIN", "DOWN 1/2"
    weight: int
    agent_status: str

    @property
    def base_status(self) -> str:
        return self.status.split(" ")[0] if self.status else ""

    @property
    def in_rotation(self) -> bool:
        """HAProxy would send new requests to it."""
        return self.base_status == "UP" and self.weight > 0


@dataclass(frozen=True)
class AgentSample:
    at: float
    server: str
    answer: str  # the agent's line, e.g. "up 100% maxconn:30", "down # memory 88% > 80%"; "" when unreachable


# The recorder polls the agents from an address of its own: a draining sidecar waits for every address that
# polls it to hear `drain`, and the recorder must not pass for the HAProxy (which polls from 127.0.0.1).
OBSERVER_ADDRESS = "127.0.0.2"


def read_agent(port: int, timeout: float = 1.0) -> str:
    """One agent-check exchange, as HAProxy does it: connect, read one line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(OBSERVER_ADDRESS, 0)) as sock:
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


@dataclass(frozen=True)
class CpuSample:
    at: float
    server: str
    used_seconds: float  # CPU time the instance's cgroup used since it was created


class Poller:
    """Calls `sample()` every `period` seconds in a thread until stopped."""

    def __init__(self, period: float, sample: Callable[[], None], name: str) -> None:
        self._period, self._sample = period, sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # HAProxy gone for a moment: the gap shows in the samples
                self._sample()
            next_at += self._period
            self._stop.wait(max(0.0, next_at - time.monotonic()))


class HAProxyRecorder:
    def __init__(self, haproxy: HAProxyProcess, backend: str, period: float = 0.1) -> None:
        self.haproxy, self.backend = haproxy, backend
        self.samples: list[ServerSample] = []
        self._lock = threading.Lock()
        self.poller = Poller(period, self._sample, "haproxy-sampler")

    def _sample(self) -> None:
        states = self.haproxy.server_states()
        now = time.monotonic()
        rows = [ServerSample(now, server, state.status, state.weight, state.agent_status)
                for (backend, server), state in sorted(states.items()) if backend == self.backend]
        with self._lock:
            self.samples.extend(rows)

    def snapshot(self) -> list[ServerSample]:
        with self._lock:
            return list(self.samples)

    def latest(self) -> dict[str, ServerSample]:
        with self._lock:
            return {sample.server: sample for sample in self.samples[-16:]}


class AgentRecorder:
    def __init__(self, agent_ports: Mapping[str, int], period: float = 0.25) -> None:
        self.agent_ports = dict(agent_ports)
        self.samples: list[AgentSample] = []
        self._lock = threading.Lock()
        self.poller = Poller(period, self._sample, "agent-sampler")

    def _sample(self) -> None:
        for server, port in self.agent_ports.items():
            answer = read_agent(port)
            with self._lock:
                self.samples.append(AgentSample(time.monotonic(), server, answer))

    def snapshot(self) -> list[AgentSample]:
        with self._lock:
            return list(self.samples)


class CpuRecorder:
    """Each instance's cgroup CPU counter, for the load-weights chart (the demo's own view, not the tracer's)."""

    def __init__(self, groups: Mapping[str, CpuCgroup], period: float = 0.25) -> None:
        self.groups = dict(groups)
        self.samples: list[CpuSample] = []
        self._lock = threading.Lock()
        self.poller = Poller(period, self._sample, "cpu-sampler")

    def _sample(self) -> None:
        for server, group in self.groups.items():
            used = group.usage_seconds()
            if used is not None:
                with self._lock:
                    self.samples.append(CpuSample(time.monotonic(), server, used))

    def snapshot(self) -> list[CpuSample]:
        with self._lock:
            return list(self.samples)
