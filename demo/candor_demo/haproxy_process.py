"""A real HAProxy process on 127.0.0.1 for tests and the demo, with stats-socket helpers.

Used as a context manager:

    with HAProxyProcess(config_text) as haproxy:
        haproxy.server_states()[("app", "s1")].status   # "UP", "DOWN", "MAINT", "DRAIN", ...

The config text is the caller's; a `stats socket <workdir>/stats.sock level admin` line is added to its
`global` section (one is created when absent), so tests read HAProxy's own view of each server.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from candor_demo.server_process import ServerProcess

HAPROXY_BINARY = "/usr/sbin/haproxy"
_BIND = re.compile(r"^\s*bind\s+(?:127\.0\.0\.1|localhost|\*|0\.0\.0\.0)?:(\d+)", re.MULTILINE)


class HAProxyError(RuntimeError):
    """HAProxy refused its config, died, or did not come up in time; carries its output."""


@dataclass(frozen=True)
class ServerState:
    """One server line of `show stat`, as HAProxy sees it."""

    backend: str
    server: str
    status: str  # UP, DOWN, MAINT, DRAIN, "UP 1/3" (going down), "DOWN 1/2" (going up), "no check", ...
    weight: int  # the effective weight HAProxy balances with (after agent N% and slowstart)
    check_status: str  # e.g. L7OK, L4CON, "" when no check
    agent_status: str  # e.g. L7OK, L7STS (agent answered down), "" when no agent
    current_sessions: int
    total_sessions: int

    @property
    def base_status(self) -> str:
        """UP/DOWN/MAINT/DRAIN/NOLB without the transition counter or "(via ...)" suffix."""
        return self.status.split(" ")[0] if self.status else ""


def prepare_config(config_text: str, stats_socket: Path) -> str:
    """The config with an admin stats socket in its global section."""
    line = f"    stats socket {stats_socket} level admin\n"
    lines = config_text.splitlines(keepends=True)
    for index, text in enumerate(lines):
        if text.strip() == "global":
            return "".join([*lines[: index + 1], line, *lines[index + 1 :]])
    return "global\n" + line + "\n" + config_text


def check_config(config_text: str, binary: str = HAPROXY_BINARY) -> subprocess.CompletedProcess[str]:
    """`haproxy -c` on a config text (returncode 0 when valid; stdout/stderr say why not)."""
    with tempfile.TemporaryDirectory(prefix="candor-haproxy-check-") as workdir:
        path = Path(workdir) / "haproxy.cfg"
        path.write_text(config_text)
        return subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, check=False)


class HAProxyProcess(ServerProcess):
    """Starts `haproxy -f cfg -db` in a temporary directory; `stop()` (or leaving the `with`) ends it."""

    name = "haproxy"
    error = HAProxyError
    log_name = "haproxy.log"

    def __init__(self, config_text: str, *, workdir: str | os.PathLike[str] | None = None,
                 binary: str = HAPROXY_BINARY) -> None:
        super().__init__(binary, workdir)
        self.stats_socket = self.workdir / "stats.sock"
        self.config_path = self.workdir / "haproxy.cfg"
        self.config_text = prepare_config(config_text, self.stats_socket)

    # lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> HAProxyProcess:
        self.config_path.write_text(self.config_text)
        checked = subprocess.run([self.binary, "-c", "-f", str(self.config_path)],
                                 capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise HAProxyError(f"haproxy -c refused the config:\n{checked.stdout}{checked.stderr}\n{self.config_text}")
        self._spawn([self.binary, "-f", str(self.config_path), "-db"])
        self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Until the stats socket answers and every `bind` port of the config accepts connections."""
        deadline = time.monotonic() + timeout
        ports = [int(port) for port in _BIND.findall(self.config_text)]
        while True:
            self._raise_if_dead()
            try:
                self.command("show info")
                for port in ports:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        pass
                return
            except OSError:
                if time.monotonic() > deadline:
                    self._fail_start(f"haproxy did not listen within {timeout}s")
                time.sleep(0.05)

    # stats socket --------------------------------------------------------------------------------
    def command(self, text: str, timeout: float = 5.0) -> str:
        """One command on the admin stats socket; its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.stats_socket))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stat_rows(self) -> list[dict[str, str]]:
        """`show stat` as dicts keyed by HAProxy's CSV column names (pxname, svname, status, weight, ...)."""
        text = self.command("show stat")
        if text.startswith("# "):
            text = text[2:]
        return [dict(row) for row in csv.DictReader(io.StringIO(text)) if row.get("pxname")]

    def server_states(self) -> dict[tuple[str, str], ServerState]:
        """(backend, server) -> state, for every real server (FRONTEND/BACKEND rows left out)."""
        states: dict[tuple[str, str], ServerState] = {}
        for row in self.stat_rows():
            if row["svname"] in ("FRONTEND", "BACKEND"):
                continue
            states[(row["pxname"], row["svname"])] = ServerState(
                backend=row["pxname"], server=row["svname"], status=row.get("status", ""),
                weight=_int(row.get("weight")), check_status=row.get("check_status", ""),
                agent_status=row.get("agent_status", ""), current_sessions=_int(row.get("scur")),
                total_sessions=_int(row.get("stot")))
        return states

    def server_state(self, backend: str, server: str) -> ServerState:
        return self.server_states()[(backend, server)]

    def wait_for_status(self, backend: str, server: str, status: str, timeout: float,
                        poll: float = 0.05) -> float:
        """Polls until the server's base status is `status`; returns the seconds it took (HAProxyError if not)."""
        started = time.monotonic()
        deadline = started + timeout
        last = None
        while True:
            last = self.server_state(backend, server)
            if last.base_status == status:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise HAProxyError(f"{backend}/{server} still {last.status!r} (want {status}) after {timeout}s")
            time.sleep(poll)


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
