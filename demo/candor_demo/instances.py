"""One "pod" of the demo: a resizer app process and its own `candor sidecar`, sharing a state directory.

Termination follows a Kubernetes pod with a native sidecar and Candor's injected preStop hooks: the sidecar's
hook (`candor sidecar drain`) and the app's (GET /drain/wait) start together; the app gets SIGTERM when its
hook returns, once HAProxy has heard `drain`; once it has exited the sidecar gets SIGTERM, folds the journals
and waits for Prometheus' final scrape.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from candor_demo.cpu_cgroup import CpuCgroup
from candor_demo.ports import listen_port
from candor_demo.settings import MEMORY_LIMIT_BYTES, WORKERS_PER_INSTANCE, DemoSettings
from candor_tracer.modes import HEARTBEAT_ENV
from candor_tracer.pod_contract import APP_MEMORY_LIMIT_ENV, STATE_DIR_ENV


class InstanceError(RuntimeError):
    """An app or sidecar did not start, or died; carries the tail of its log."""


@dataclass
class Instance:
    name: str
    index: int
    workdir: Path
    job_max: float
    worker_model: str  # "thread" or "process"
    app_port: int = field(default_factory=listen_port)
    metrics_port: int = field(default_factory=listen_port)
    sidecar_port: int = field(default_factory=listen_port)
    agent_port: int = field(default_factory=listen_port)
    app: subprocess.Popen[bytes] | None = None
    sidecar: subprocess.Popen[bytes] | None = None
    cpu_group: CpuCgroup | None = None  # the app's "container" CPU cgroup, when this host lets the demo make one
    # The sidecar's control socket: a short private directory (a unix socket path has a 108-byte limit).
    control_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="candor-demo-")))

    @property
    def control_socket(self) -> Path:
        return self.control_dir / "sidecar.sock"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def truth_file(self) -> Path:
        return self.workdir / "truth.log"

    @property
    def app_log(self) -> Path:
        return self.workdir / "app.log"

    @property
    def sidecar_log(self) -> Path:
        return self.workdir / "sidecar.log"

    # -- start --------------------------------------------------------------------------------------------
    def start_sidecar(self, config: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "sidecar.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        # No CANDOR_APP_MEMORY_LIMIT here: the app's heartbeats carry its limit. With it, a sidecar whose app
        # has not started (or has exited) would sum every process on this host against it.
        env = {key: value for key, value in os.environ.items() if key != APP_MEMORY_LIMIT_ENV}
        with self.sidecar_log.open("wb") as log:
            self.sidecar = subprocess.Popen(
                [sys.executable, "-m", "candor_cli.main", "sidecar", "--config", str(config_path),
                 "--state-dir", str(self.state_dir), "--http-port", str(self.sidecar_port),
                 "--agent-port", str(self.agent_port), "--control-socket", str(self.control_socket)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def start_app(self, settings: DemoSettings) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, STATE_DIR_ENV: str(self.state_dir),
               HEARTBEAT_ENV: str(settings.heartbeat_interval),
               APP_MEMORY_LIMIT_ENV: str(MEMORY_LIMIT_BYTES)}
        with self.app_log.open("wb") as log:
            args = [sys.executable, "-m", "candor_demo.resizer_app", "--name", self.name,
                    "--workers", str(WORKERS_PER_INSTANCE), "--max-job", str(self.job_max),
                    "--http-port", str(self.app_port), "--metrics-port", str(self.metrics_port),
                    "--truth-file", str(self.truth_file), "--worker-model", self.worker_model,
                    "--seed", str(self.index + 1)]
            # Into its group before it runs anything: the tracer finds its cgroup once, at start.
            self.app = subprocess.Popen(self.cpu_group.wrap(args) if self.cpu_group is not None else args,
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def wait_ready(self, timeout: float) -> None:
        """Until the app answers, the sidecar serves /metrics and the agent port accepts connections."""
        deadline = time.monotonic() + timeout
        checks = [("app", f"http://127.0.0.1:{self.app_port}/workers"),
                  ("sidecar", f"http://127.0.0.1:{self.sidecar_port}/metrics"),
                  ("naive metrics", f"http://127.0.0.1:{self.metrics_port}/metrics")]
        for what, url in checks:
            while True:
                self.raise_if_dead()
                try:
                    with urllib.request.urlopen(url, timeout=1.0):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise InstanceError(f"{self.name}: {what} not answering at {url} after {timeout:.0f}s\n"
                                            f"{self.logs()}") from None
                    time.sleep(0.1)

    def raise_if_dead(self) -> None:
        for what, process in (("app", self.app), ("sidecar", self.sidecar)):
            if process is not None and process.poll() is not None:
                raise InstanceError(f"{self.name}: {what} exited with status {process.returncode}\n{self.logs()}")

    def logs(self, lines: int = 15) -> str:
        parts = []
        for path in (self.app_log, self.sidecar_log):
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = []
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- control ------------------------------------------------------------------------------------------
    def call(self, method: str, path: str, timeout: float = 30.0) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.app_port}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/workers")
        return result

    # -- stop ---------------------------------------------------------------------------------------------
    def run_drain_hook(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """The sidecar container's preStop hook: `candor sidecar drain`, a new process reaching the control socket."""
        return subprocess.run([sys.executable, "-m", "candor_cli.main", "sidecar", "drain", "--control-socket",
                               str(self.control_socket)], capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)

    def run_wait_hook(self, timeout: float) -> tuple[str, str]:
        """The app container's preStop hook, as the kubelet runs it: GET /drain/wait; (outcome, text)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.sidecar_port}/drain/wait", timeout=timeout) as answer:
                return answer.headers.get("Candor-Drain", ""), answer.read().decode(errors="replace").strip()
        except (OSError, urllib.error.URLError) as error:  # the kubelet would log it and go on to SIGTERM
            return "failed", str(error)

    def terminate_app(self, timeout: float) -> float | None:
        """SIGTERM to the app; the monotonic time it exited (None if it had to be killed)."""
        if self.app is None or self.app.poll() is not None:
            return None
        self.app.send_signal(signal.SIGTERM)
        try:
            self.app.wait(timeout)
            return time.monotonic()
        except subprocess.TimeoutExpired:
            self.app.kill()
            self.app.wait()
            return None

    def stop_all(self) -> None:
        """Clean-up at the end or on error: whatever still runs gets SIGTERM, then SIGKILL."""
        for process in (self.app, self.sidecar):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self.app, self.sidecar):
            if process is not None and process.poll() is None:
                try:
                    process.wait(5.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.control_dir, ignore_errors=True)
