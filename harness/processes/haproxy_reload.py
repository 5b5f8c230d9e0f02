"""HAProxy reloaded the way the ingress controllers reload it: a new process that takes over the servers'
state from a file, while the old one finishes what it has and closes its idle client connections.

Both controllers run HAProxy in master-worker mode (haproxy-ingress: `-W -S`; haproxytech: the master
socket) and, before a reload, write a new config whose server lines carry the endpoints' current
addresses (HAProxy does not take an address set through the runtime API from the state file for a server
configured with an IP), and the servers' runtime state (admin state, weights, check results) where the
config's `server-state-file` points, loaded by the new worker (`load-server-state-from-file global`).
The master re-executes on SIGUSR2: the old worker stops accepting, finishes the requests it has in
flight, and closes the kept-alive client connections that sit idle between requests (a client reusing
one at that moment sees it closed unanswered).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

from candor_demo.haproxy_process import HAProxyProcess

STATE_FILE = "server-state"


def with_server_state(config_text: str, state_file: str) -> str:
    """The config with `server-state-file` in its global section and `load-server-state-from-file global`
    in each defaults section, as the controllers' templates have them."""
    text = re.sub(r"^global\n", f"global\n    server-state-file {state_file}\n", config_text, count=1, flags=re.M)
    if text == config_text:
        text = f"global\n    server-state-file {state_file}\n" + config_text
    return re.sub(r"^defaults\n", "defaults\n    load-server-state-from-file global\n", text, flags=re.M)


FORCED_MAINT = 0x01  # SRV_ADMF_FMAINT in `show servers state`'s srv_admin_state


def with_servers(config_text: str, state_text: str) -> str:
    """The config with each server line at the address and port `show servers state` gives it, and
    `disabled` where the server is in (forced) maintenance: the config a controller writes at a reload."""
    servers: dict[tuple[str, str], tuple[str, str, bool]] = {}
    for line in state_text.splitlines():
        fields = line.split()
        if len(fields) > 18 and not line.startswith("#"):
            servers[(fields[1], fields[3])] = (fields[4], fields[18], bool(int(fields[6]) & FORCED_MAINT))
    backend = ""
    lines = []
    for line in config_text.splitlines():
        section = re.match(r"backend\s+(\S+)", line)
        if section:
            backend = section.group(1)
        server = re.match(r"(\s+server\s+(\S+)\s+)\S+(.*)$", line)
        if server and (backend, server.group(2)) in servers:
            address, port, maint = servers[(backend, server.group(2))]
            rest = re.sub(r"\s+disabled\b", "", server.group(3))
            line = f"{server.group(1)}{address}:{port}{rest}{' disabled' if maint else ''}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class ReloadableHAProxy(HAProxyProcess):
    """`haproxy -W` (master-worker); `reload()` saves the servers' state and starts a new worker."""

    def __init__(self, config_text: str) -> None:
        super().__init__(config_text)
        self.state_path = self.workdir / STATE_FILE
        self.config_text = with_server_state(self.config_text, str(self.state_path))
        self.reloads = 0
        # Held while the state is saved and the new worker starts: a controller changes no server meanwhile
        # (one written after the save would be lost to the new worker).
        self.reload_lock = threading.Lock()

    def start(self, timeout: float = 10.0) -> ReloadableHAProxy:
        self.config_path.write_text(self.config_text)
        self._spawn([self.binary, "-W", "-f", str(self.config_path), "-db"])
        self.wait_listening(timeout)
        # The worker can answer before the master has installed its handlers: a SIGUSR2 then would be lost.
        deadline = time.monotonic() + timeout
        while not self._master_catches(signal.SIGUSR2):
            self._raise_if_dead()
            if time.monotonic() > deadline:
                self._fail_start("the master process never caught SIGUSR2")
            time.sleep(0.02)
        return self

    def _master_catches(self, signum: int) -> bool:
        """Whether the master process has a handler for `signum` (SigCgt in /proc/PID/status)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
        return False

    def worker_pid(self) -> int:
        match = re.search(r"^Pid: (\d+)$", self.command("show info"), flags=re.M)
        if match is None:
            raise self.error("`show info` has no Pid line")
        return int(match.group(1))

    def reload(self, timeout: float = 10.0) -> float:
        """Save the servers' state, reload; returns the monotonic time the new worker answered."""
        with self.reload_lock:
            old = self.worker_pid()
            # `show servers state` with no backend: the file format `load-server-state-from-file` reads.
            state = self.command("show servers state")
            self.state_path.write_text(state)
            self.config_text = with_servers(self.config_text, state)
            self.config_path.write_text(self.config_text)
            assert self.process is not None
            self.process.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + timeout
            while True:
                self._raise_if_dead()
                try:
                    if self.worker_pid() != old:
                        self.reloads += 1
                        return time.monotonic()
                except OSError:
                    pass  # the socket is between the two workers
                if time.monotonic() > deadline:
                    raise self.error(f"no new worker {timeout}s after SIGUSR2:\n{self.output()}")
                time.sleep(0.02)
