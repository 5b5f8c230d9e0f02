"""Run the real `candor operator` as a subprocess against the test control plane (tests and bench).

    with OperatorProcess(cluster, workdir, namespaces=[ns]) as op:
        op.register_webhook(namespaces=[ns])   # MutatingWebhookConfiguration -> https://127.0.0.1:<port>/candor/inject
        ...
        op.kill()                               # SIGKILL, like a node loss
        op.start()                              # same ports and certs, a new process

The operator's output goes to `<workdir>/operator-<n>.log` (printed on failure by `log_tail()`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from candor_operator.webhook import url as webhook_url
from candor_operator.webhook import webhook_configuration
from harness.cluster.control_plane import K8sCluster
from harness.processes.ports import free_port, listening

ROOT = Path(__file__).resolve().parents[2]
CANDOR = str(Path(sys.executable).with_name("candor"))


class OperatorProcess:
    def __init__(
        self,
        cluster: K8sCluster,
        workdir: Path,
        *,
        namespaces: Sequence[str] = (),
        webhook: bool = True,
        resync: float = 3.0,
        standalone: bool = True,
        sidecar_image: str = "candor-sidecar:test",
        extra_args: Sequence[str] = (),
        kubeconfig: Path | None = None,
        metrics: bool = False,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.namespaces = list(namespaces)
        self.webhook = webhook
        self.resync = resync
        self.standalone = standalone
        self.sidecar_image = sidecar_image
        self.extra_args = list(extra_args)
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port() if metrics else None
        self.readiness_port = free_port()
        self.cert = cluster.serving_cert(f"operator-{uuid.uuid4().hex[:6]}") if webhook else None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_file = workdir / "operator-0.log"
        self.webhook_names: list[str] = []

    @property
    def argv(self) -> list[str]:
        argv = [CANDOR, "operator", f"--kubeconfig={self.kubeconfig}", f"--resync={self.resync}",
                f"--sidecar-image={self.sidecar_image}", f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
                f"--readiness=http://127.0.0.1:{self.readiness_port}/readyz"]
        argv += [f"--namespace={ns}" for ns in self.namespaces]
        if self.metrics_port is not None:
            argv.append(f"--metrics=http://127.0.0.1:{self.metrics_port}/metrics")
        if self.standalone:
            argv.append("--standalone")
        if self.webhook and self.cert is not None:
            argv += ["--webhook-listen=127.0.0.1", f"--webhook-port={self.webhook_port}",
                     f"--webhook-cert={self.cert.cert_file}", f"--webhook-key={self.cert.key_file}"]
        else:
            argv.append("--no-webhook")
        return argv + self.extra_args

    def start(self, wait: bool = True) -> OperatorProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.log_file = self.workdir / f"operator-{self.starts}.log"
        self.starts += 1
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"},
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def scrape(self) -> str:
        """The operator's /metrics, as Prometheus' text format."""
        assert self.metrics_port is not None, "started without metrics=True"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    def readiness(self) -> tuple[int, dict[str, Any]]:
        """The readiness endpoint's status and JSON (0 and {} when nothing answers)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.readiness_port}/readyz", timeout=5) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read())
        except (urllib.error.URLError, OSError):
            return 0, {}

    def webhook_listening(self) -> bool:
        """kopf answers its health endpoint before its webhook server has bound: a test must wait for both."""
        return not self.webhook or listening(self.webhook_port)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.healthy() and self.webhook_listening()
                   and (self.metrics_port is None or listening(self.metrics_port))):
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"candor operator exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"candor operator not ready within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return "\n".join(
            (self.workdir / f"operator-{n}.log").read_text(errors="replace")
            for n in range(self.starts) if (self.workdir / f"operator-{n}.log").exists()
        )

    # kopf's line for every run of the policy timer; logged with --verbose (kopf.objects is quiet otherwise).
    RESYNC_DONE = "Timer 'resync' succeeded."

    def resyncs(self) -> int:
        """Policy resyncs completed so far (needs extra_args=["--verbose"])."""
        return self.log_text().count(self.RESYNC_DONE)

    def wait_resyncs(self, count: int, timeout: float | None = None) -> None:
        """Until `count` more policy resyncs have completed: what a test waits for before saying nothing
        changed. Needs the operator started with extra_args=["--verbose"]."""
        assert "--verbose" in self.extra_args, "resyncs are logged with --verbose only"
        target = self.resyncs() + count
        deadline = time.monotonic() + (timeout if timeout is not None else (count + 2) * self.resync + 30)
        while (seen := self.resyncs()) < target:
            assert time.monotonic() < deadline, f"{seen} resyncs, waiting for {target}:\n{self.log_tail()}"
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)

    def register_webhook(self, namespaces: Sequence[str] | None = None) -> str:
        """A MutatingWebhookConfiguration calling this operator, limited to the test's namespaces."""
        assert self.cert is not None
        name = f"candor-test-{uuid.uuid4().hex[:8]}"
        config = webhook_configuration(
            {"url": webhook_url(f"https://127.0.0.1:{self.webhook_port}"), "caBundle": self.cert.ca_bundle}, name=name
        )
        scope = list(namespaces if namespaces is not None else self.namespaces)
        if scope:
            for hook in config["webhooks"]:
                hook["namespaceSelector"] = {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": scope}]}
        self.cluster.api("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", config).ok()
        self.webhook_names.append(name)
        return name

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        for name in self.webhook_names:
            self.cluster.api("DELETE", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
