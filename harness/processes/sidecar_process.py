"""A real `python -m candor_sidecar` process on 127.0.0.1 for integration tests."""

from __future__ import annotations

import atexit
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from harness.processes.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


class _ChildProcess:
    """What the sidecar and the app processes share: start-up polling, signals, the `with` form."""

    process: subprocess.Popen[bytes] | None = None

    def _wait_until_answering(self, probe: Callable[[], bool], timeout: float, what: str,
                              output: Callable[[], str] = lambda: "") -> None:
        """Poll `probe()` (True once it answers) until `timeout`; raise with `output()` if the child dies."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited {self.process.returncode}:\n{output()}")
            try:
                if probe():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not answering within {timeout}s:\n{output()}")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.kill()

    def start(self, timeout: float = 20.0) -> Self:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and wait until it died (its ports are free for a restart then)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process must run to die
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class SidecarProcess(_ChildProcess):
    def __init__(self, state_dir: str | os.PathLike[str], *, config: dict[str, Any] | None = None,
                 pod_info_dir: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
                 open_files: int | None = None, grace_period: float | None = None,
                 args: list[str] | None = None,
                 control_dir: str | os.PathLike[str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.args = list(args or [])  # more command-line flags, as the injection passes them (e.g. --app-port)
        self.grace_period = grace_period  # --termination-grace-period, as the injection passes the pod's
        self.open_files = open_files  # RLIMIT_NOFILE (soft and hard) for the sidecar, as `ulimit -n` would
        self.http_port = free_port()
        self.agent_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="candor-sidecar-"))
        # Removed when the test process ends, not on exit from `with`: a test may read the log afterwards.
        atexit.register(shutil.rmtree, self.workdir, True)
        self.pod_info_dir = Path(pod_info_dir) if pod_info_dir is not None else self.workdir / "podinfo"
        document: dict[str, Any] = {
            "stateDir": str(self.state_dir), "podInfoDir": str(self.pod_info_dir),
            "http": {"port": self.http_port, "address": "127.0.0.1"},
            "agent": {"port": self.agent_port, "address": "127.0.0.1"},
        }
        document.update(config or {})
        self.config_path = self.workdir / "sidecar.yaml"
        self.config_path.write_text(yaml.safe_dump(document))
        self.log_path = self.workdir / "sidecar.log"
        # As in a pod: the control socket's directory is the sidecar's own (here its private temporary directory,
        # or `control_dir`: the one a previous sidecar of the same "pod" used, as the emptyDir outlives restarts).
        self.control_dir = Path(control_dir) if control_dir is not None else self.workdir / "control"
        self.control_socket = self.control_dir / "sidecar.sock"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "CANDOR_CONTROL_SOCKET": str(self.control_socket),
                    **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> SidecarProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            grace = [] if self.grace_period is None else ["--termination-grace-period", f"{self.grace_period:g}"]
            self.process = subprocess.Popen([sys.executable, "-m", "candor_sidecar", "--config", str(self.config_path),
                                             *grace, *self.args], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=ROOT,
                                            preexec_fn=self._limit_open_files)
        self._wait_until_answering(lambda: self.get("/livez")[0] == 200, timeout, "sidecar", self.logs)
        return self

    def _limit_open_files(self) -> None:
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path: str, headers: dict[str, str] | None = None,
            timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def evaluations(self) -> int:
        """How many evaluations the sidecar has run (the Candor-Evaluation header of /health)."""
        return int(self.get("/health")[1]["candor-evaluation"])

    def agent_answers(self) -> int:
        """Agent-check connections answered so far (candor_agent_answers_total)."""
        for line in self.get("/metrics")[2].decode().splitlines():
            if line.startswith("candor_agent_answers_total "):
                return int(float(line.split()[1]))
        raise AssertionError("no candor_agent_answers_total in /metrics")

    def wait_evaluations(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` more evaluations have run: what a test waits for before saying nothing changed."""
        target = self.evaluations() + count
        deadline = time.monotonic() + timeout
        while (seen := self.evaluations()) < target:
            assert time.monotonic() < deadline, f"{seen} evaluations after {timeout} s, waiting for {target}"
            time.sleep(0.05)

    def run_drain(self, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """`candor sidecar drain` as the kubelet runs the preStop hook: a new process in the sidecar's environment."""
        return subprocess.run([sys.executable, "-m", "candor_cli.main", "sidecar", "drain"], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def agent_line(self, timeout: float = 5.0) -> str:
        with socket.create_connection(("127.0.0.1", self.agent_port), timeout=timeout) as sock:
            chunks = []
            while chunk := sock.recv(1024):
                chunks.append(chunk)
                if b"\n" in chunk:
                    break
        return b"".join(chunks).decode()

    def set_annotations(self, annotations: dict[str, str]) -> None:
        """As the kubelet does: a new directory, then an atomic swap of the ..data symlink."""
        root = self.pod_info_dir
        root.mkdir(parents=True, exist_ok=True)
        version = f"..{time.time_ns()}"
        (root / version).mkdir()
        (root / version / "annotations").write_text(
            "".join(f'{key}="{value}"\n' for key, value in annotations.items()))
        tmp = root / "..data_tmp"
        tmp.symlink_to(version)
        os.replace(tmp, root / "..data")
        if not (root / "annotations").is_symlink():
            (root / "annotations").symlink_to("..data/annotations")


class AppProcess(_ChildProcess):
    """`python -m harness.apps.traced_app` with CANDOR_STATE_DIR: a real traced app writing a journal."""

    def __init__(self, state_dir: str | os.PathLike[str], name: str = "app", capacity: int | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.name = name
        self.capacity = capacity  # workers the app declares (candor_tracer.declare_capacity); None: none
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> AppProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CANDOR_STATE_DIR": str(self.state_dir)}
        capacity = [] if self.capacity is None else ["--capacity", str(self.capacity)]
        self.process = subprocess.Popen([sys.executable, "-m", "harness.apps.traced_app", "--port", str(self.port),
                                         "--name", self.name, *capacity], env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
        self._wait_until_answering(lambda: self.get("/")[0] == 200, timeout, f"app {self.name}")
        return self

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()
