"""A real Prometheus server on 127.0.0.1 for tests and the demo.

    with PrometheusProcess(["127.0.0.1:9898"], scrape_interval=1.0) as prom:
        prom.wait_for_targets_up()
        prom.query('rate(job_worked_seconds_total[5s])')

Storage lives in a temporary directory; the web port is a free one unless given.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from candor_sidecar.durations import format_duration

PROMETHEUS_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus died, did not get ready, or a query failed; carries its output or the API error."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_config(jobs: Mapping[str, Sequence[str]], scrape_interval: float, metrics_path: str = "/metrics") -> str:
    """prometheus.yml with one static job per entry; the timeout equals the interval (Prometheus' maximum)."""
    interval = format_duration(scrape_interval)
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": name, "metrics_path": metrics_path, "static_configs": [{"targets": list(targets)}]}
            for name, targets in jobs.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


class PrometheusProcess:
    """Starts `prometheus` with a generated config; `query`, `query_range`, `targets`, `stop`."""

    def __init__(self, targets: Sequence[str] | Mapping[str, Sequence[str]], *, scrape_interval: float = 1.0,
                 port: int | None = None, workdir: str | os.PathLike[str] | None = None,
                 metrics_path: str = "/metrics", binary: str = PROMETHEUS_BINARY,
                 extra_args: Sequence[str] = ()) -> None:
        if scrape_interval < 0.001:
            raise ValueError("scrape_interval: must be at least 1ms")
        self.jobs: dict[str, list[str]] = (
            {name: list(items) for name, items in targets.items()} if isinstance(targets, Mapping)
            else {"candor": list(targets)})
        self.scrape_interval = scrape_interval
        self.port = port if port is not None else _free_port()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="candor-prometheus-"))
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self.metrics_path = metrics_path
        self.binary = binary
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> PrometheusProcess:
        self.config_path.write_text(render_config(self.jobs, self.scrape_interval, self.metrics_path))
        args = [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *self.extra_args]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_dead()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(f"prometheus not ready within {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusProcess:
        return self.start() if self.process is None else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _raise_if_dead(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise PrometheusError(f"prometheus is not running:\n{self.output()}")

    # HTTP API ------------------------------------------------------------------------------------
    def api(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10.0) -> Any:
        """GET /api/v1/<path>; the `data` member of a success answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise PrometheusError(f"{path} {params}: HTTP {error.code}: {error.read().decode(errors='replace')}") \
                from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result list (each {"metric": {...}, "value": [t, "v"]})."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[dict[str, Any]] = self.api("query", params)["result"]
        return result

    def query_value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of an instant query, None when it has no result."""
        result = self.query(expr, at)
        if not result:
            return None
        return float(result[0]["value"][1])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query; each {"metric": {...}, "values": [[t, "v"], ...]}."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"}
        result: list[dict[str, Any]] = self.api("query_range", params)["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        """Until every configured target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        wanted = sum(len(items) for items in self.jobs.values())
        while True:
            targets = self.targets()
            if len(targets) >= wanted and all(target.get("health") == "up" for target in targets):
                return
            if time.monotonic() > deadline:
                raise PrometheusError(f"targets not up within {timeout}s: {targets}")
            time.sleep(0.2)
