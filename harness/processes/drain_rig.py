"""Pods leaving under load, on the test node: the demo app's Deployments, an HAProxy fed by the controller
emulation (harness/processes/endpoint_follower.py, haproxytech's or haproxy-ingress's behaviour), a steady
request stream per Deployment, and what each pod's app saw (its SIGTERM time, in an events file on the
node, which is this machine).

Shared by tests/integration/test_node_drain.py and bench/drain.py. Deployments side by side (``CELLS``),
equal but for what their name says:

* ``candor``: the sidecar injected (drain handshake in preStop), HAProxy's backend from `candor render`
  (agent-check, `option redispatch 1`, retries), and the app's own readiness probe;
* ``candor-bare``: the same without a readiness probe of its own (as the README's example once shipped):
  only the sidecar's readiness (the app's port accepting connections) and minReadySeconds protect it;
* ``plain``: no Candor; the app's readiness probe, HAProxy's defaults for the backend;
* ``plain-bare``: no Candor and no readiness probe;
* ``plain-sleep``: no Candor, the readiness probe, and what careful users add instead of a handshake: a
  ``preStop`` that sleeps 15 s, with a grace period that leaves the app time to finish after it.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candor_demo.haproxy_process import HAProxyProcess
from candor_operator.policy import parse_policy
from candor_operator.render import BALANCE, render_backend
from candor_sidecar.release import VERSION
from harness.processes.endpoint_follower import HAPROXYTECH, EndpointSliceFollower, declare_slots
from harness.processes.haproxy_reload import ReloadableHAProxy

POLICY: dict[str, Any] = {
    "httpCheck": {"path": "/health", "interval": "2s", "rise": 2, "fall": 3},
    "agentCheck": {"interval": "1s"},
    "slowStart": "0s",
    "metrics": {"finalScrapeTimeout": "20s"},
}
SLOTS = 8
# The usual workaround's guess: long enough for endpoints, controllers and HAProxy to follow, in most clusters.
SLEEP_SECONDS = 15


@dataclass(frozen=True)
class Cell:
    inject: bool  # Candor's sidecar and rendered backend
    probe: bool  # the app's own readiness probe
    sleep: int = 0  # seconds of a `preStop: sleep` before the app's SIGTERM


CELLS: dict[str, Cell] = {
    "candor": Cell(True, True), "candor-bare": Cell(True, False), "plain": Cell(False, True),
    "plain-bare": Cell(False, False), "plain-sleep": Cell(False, True, SLEEP_SECONDS),
}


def names_of(text: str, allowed: Iterable[str], flag: str) -> list[str]:
    """A benchmark's comma-separated choice (`--cells`, `--controllers`, `--ways`), each checked."""
    allowed = tuple(allowed)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise SystemExit(f"{flag}: a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return names


def app_deployment(name: str, namespace: str, replicas: int, inject: bool, events_dir: Path,
                   probe: bool = True, sleep: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app", "image": f"candor-sidecar:{VERSION}",
        "command": ["python", "-m", "candor_demo.resizer_app"],
        "args": ["--name=$(POD_NAME)", "--bind=0.0.0.0", "--http-port=8080", "--metrics-port=9100",
                 "--truth-file=/events/$(POD_NAME).truth", "--events-file=/events/sigterm", "--workers=2",
                 "--max-job=5"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "volumeMounts": [{"name": "events", "mountPath": "/events"}],
        # A CPU request in every cell, so the apps are not BestEffort pods starved by everything else this
        # machine runs during a rollout.
        "resources": {"requests": {"cpu": "100m"}},
    }
    if probe:  # a new pod gets traffic once it answers
        container["readinessProbe"] = {"httpGet": {"path": "/resize", "port": 8080}, "periodSeconds": 2}
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "events", "hostPath": {"path": str(events_dir), "type": "Directory"}}],
    }
    if sleep:  # the kubelet's own sleep action (GA in 1.34): no shell needed in the image
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": sleep}}}
        pod_spec["terminationGracePeriodSeconds"] = sleep + 15
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": {"candor.io/inject": str(inject).lower()}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}}, "spec": pod_spec,
        }},
    }


def _policy_spec(cells: Iterable[str], controller: str) -> dict[str, Any]:
    governed = [name for name in cells if CELLS[name].inject]
    return {**POLICY, "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": governed}]},
            "ingress": {"controller": controller, "services": governed}}


def objects(namespace: str, events_dir: Path, replicas: int = 3, cells: Iterable[str] = ("candor", "plain"),
            controller: str = HAPROXYTECH) -> list[dict[str, Any]]:
    """The HealthPolicy `candor` (governing the injected cells), and a Service and a Deployment per cell."""
    cells = list(cells)
    result = [{"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy",
               "metadata": {"name": "candor", "namespace": namespace}, "spec": _policy_spec(cells, controller)}]
    for name in cells:
        cell = CELLS[name]
        result.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                       "spec": {"selector": {"app": name},
                                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        result.append(app_deployment(name, namespace, replicas, cell.inject, events_dir, cell.probe, cell.sleep))
    return result


def haproxy_config(fronts: dict[str, int], controller: str = HAPROXYTECH, source: str | None = None) -> str:
    """A frontend and a backend of SLOTS empty slots per cell: Candor's rendered backend for the injected
    cells, the controller's default balance alone for the others. `source`: the address HAProxy connects
    from (checks and agent polls included), so that several HAProxys look like several load balancers.
    The timeouts are both controllers' defaults (50 s), so a 20 s request is not cut by HAProxy."""
    policy = parse_policy(_policy_spec(fronts, controller)) if any(CELLS[name].inject for name in fronts) else None
    text = ("global\n    maxconn 500\ndefaults\n    mode http\n    timeout connect 1s\n"
            "    timeout client 50s\n    timeout server 50s\n")
    for name, port in fronts.items():
        text += f"frontend fe_{name}\n    bind 127.0.0.1:{port}\n    default_backend {name}\n"
    for name in fronts:
        backend = (render_backend(policy, name=name, controller=controller) if policy and CELLS[name].inject
                   else f"backend {name}\n    mode http\n    balance {BALANCE[controller]}\n")
        if source is not None:
            backend = backend.replace(f"backend {name}\n", f"backend {name}\n    source {source}\n", 1)
        text += declare_slots(backend, SLOTS)
    return text


@dataclass
class Answer:
    sent: float
    done: float
    status: int  # 0: no HTTP answer (refused, reset, timeout)
    pod: str
    error: str = ""  # why there was no answer
    # A kept-alive connection closed before any answer to this request (an HAProxy reload closes idle ones):
    # counted apart from the failures, with the status a client retrying at once on a new connection got.
    closed_idle: bool = False


# What a client sees when the server closed the kept-alive connection it reused: no byte of an answer.
_CLOSED_UNANSWERED = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
                      BrokenPipeError)


@dataclass
class Load:
    """A steady stream of GET /resize at ``rate`` requests per second, spread over ``ports`` (one frontend
    each, e.g. one per HAProxy). Every ``kept_alive``-th request goes over a kept-alive connection from a
    small pool, as browsers and API clients reuse theirs; the others open a new connection each (as many
    clients look to HAProxy). A request whose reused connection was closed unanswered is retried once on
    a new connection, as HTTP clients do for idempotent requests; it is counted apart (`closed_idle`)."""

    ports: tuple[int, ...]
    rate: float
    kept_alive: int = 0  # 0: none; N: every Nth request
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ports:
            raise ValueError("Load: no ports")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: dict[int, list[http.client.HTTPConnection]] = {port: [] for port in self.ports}
        self._pool_lock = threading.Lock()

    @staticmethod
    def _ask(connection: http.client.HTTPConnection) -> tuple[int, str]:
        connection.request("GET", "/resize")
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace").strip()

    def _fresh(self, port: int, sent: float, closed_idle: bool = False) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        status, pod, error = 0, "", ""
        try:
            status, pod = self._ask(connection)
        except (OSError, http.client.HTTPException) as failure:
            error = type(failure).__name__
        finally:
            connection.close()
        return Answer(sent, time.monotonic(), status, pod, error, closed_idle)

    def _reusing(self, port: int, sent: float) -> Answer:
        with self._pool_lock:
            pool = self._pool[port]
            connection = pool.pop() if pool else None
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            reused = False
        else:
            reused = True
        try:
            status, pod = self._ask(connection)
        except _CLOSED_UNANSWERED:
            connection.close()
            if reused:
                return self._fresh(port, sent, closed_idle=True)
            return Answer(sent, time.monotonic(), 0, "", "RemoteDisconnected")
        except (OSError, http.client.HTTPException) as failure:
            connection.close()
            return Answer(sent, time.monotonic(), 0, "", type(failure).__name__)
        with self._pool_lock:
            self._pool[port].append(connection)
        return Answer(sent, time.monotonic(), status, pod)

    def _one(self, number: int, sent: float) -> None:
        port = self.ports[number % len(self.ports)]
        reuse = self.kept_alive > 0 and number % self.kept_alive == 0
        self.answers.append(self._reusing(port, sent) if reuse else self._fresh(port, sent))

    def _run(self) -> None:
        began = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = began + sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            thread = threading.Thread(target=self._one, args=(sent, time.monotonic()), daemon=True)
            thread.start()
            self._threads.append(thread)
            sent += 1

    def __enter__(self) -> Load:
        self._runner = threading.Thread(target=self._run, daemon=True)
        self._runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._runner.join(5)
        for thread in self._threads:
            thread.join(15)
        with self._pool_lock:
            for pool in self._pool.values():
                for connection in pool:
                    connection.close()

    def failed(self) -> list[Answer]:
        """Requests that got no good answer, the retried ones of a closed kept-alive connection included
        only when the retry failed too."""
        return [a for a in self.answers if a.status != 200]

    def closed_idle(self) -> list[Answer]:
        """Requests whose kept-alive connection was closed unanswered (then retried on a new one)."""
        return [a for a in self.answers if a.closed_idle]


def sigterms(events_dir: Path) -> dict[str, float]:
    """pod name -> monotonic time its app got SIGTERM."""
    times: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in (events_dir / "sigterm").read_text().splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "sigterm":
                times.setdefault(words[1], float(words[2]))
    return times


def answered_after_sigterm(load: Load, events_dir: Path) -> list[Answer]:
    """Requests a pod's app answered although HAProxy sent them after that app got SIGTERM."""
    terms = sigterms(events_dir)
    return [a for a in load.answers if a.status == 200 and a.pod in terms and a.sent > terms[a.pod]]


@contextlib.contextmanager
def rig(cluster: Any, namespace: str, fronts: dict[str, int], controller: str = HAPROXYTECH, lag: float = 0.0,
        reloadable: bool = False, source: str | None = None,
        ) -> Iterator[tuple[HAProxyProcess, dict[str, EndpointSliceFollower]]]:
    """HAProxy with a frontend per cell (`fronts`: cell -> port), each backend's slots kept by the emulation
    of `controller`, `lag` seconds behind the EndpointSlices, connecting from `source` if given.
    `reloadable`: a ReloadableHAProxy, whose `reload()` does what a controller's reload does
    (harness/processes/haproxy_reload.py); the followers then pause while it reloads, as a controller's
    sync loop does."""
    config = haproxy_config(fronts, controller, source)
    with (ReloadableHAProxy(config) if reloadable else HAProxyProcess(config)) as haproxy, \
            contextlib.ExitStack() as stack:
        lock = haproxy.reload_lock if isinstance(haproxy, ReloadableHAProxy) else None
        followers = {name: stack.enter_context(EndpointSliceFollower(
            cluster, haproxy, namespace, name, name, SLOTS, controller=controller, lag=lag, sync_lock=lock))
            for name in fronts}
        yield haproxy, followers
