"""A real Prometheus server on 127.0.0.1 for tests and the demo.

    with PrometheusProcess(["127.0.0.1:9898"], scrape_interval=1.0) as prom:
        prom.wait_for_targets_up()
        prom.query('rate(job_worked_seconds_total[5s])')

Storage lives in a temporary directory; the web port is a free one unless given.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from candor_demo.ports import listen_port
from candor_demo.server_process import ServerProcess
from candor_sidecar.durations import format_duration

PROMETHEUS_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus died, did not get ready, or a query failed; carries its output or the API error."""


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


class PrometheusProcess(ServerProcess):
    """Starts `prometheus` with a generated config; `query`, `query_range`, `targets`, `stop`."""

    name = "prometheus"
    error = PrometheusError
    log_name = "prometheus.log"

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
        self.port = port if port is not None else listen_port()
        super().__init__(binary, workdir)
        self.config_path = self.workdir / "prometheus.yml"
        self.metrics_path = metrics_path
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> PrometheusProcess:
        self.config_path.write_text(render_config(self.jobs, self.scrape_interval, self.metrics_path))
        args = [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *self.extra_args]
        self._spawn(args)
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
                self._fail_start(f"prometheus not ready within {timeout}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)  # Prometheus flushes its head block on SIGTERM: give it longer

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
