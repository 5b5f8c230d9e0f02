"""The drain handshake on a real pod: HAProxy takes the pod out of rotation (it hears `drain`, or the
controller removes the server) before the app gets SIGTERM (no request it sends after that reaches the
app, none fails), the sidecar gets SIGTERM after the app, and a last scrape of
/metrics after that has every job second the app worked.

The pod then gets the operator's `Drained` Event, from the summary the sidecar left as its termination message.

The chart's webhook injects the pod; HAProxy's servers follow the Service's EndpointSlices as each real
controller's do (harness/processes/endpoint_follower.py, haproxytech and haproxy-ingress) and ask the sidecar's
agent. Observed from outside: HAProxy's stats
(every 10 ms), the app's SIGTERM time (written by the app to a file on the node, in the monotonic clock
every container shares), the sidecar's /health (which says when the sidecar itself is terminating) and
/metrics, scraped as Prometheus would.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor_demo.truth import read_intervals
from candor_operator.drain_events import read_event_message
from harness.cluster.control_plane import K8sCluster
from harness.cluster.helm import install_chart, uninstall_chart
from harness.cluster.node import Node
from harness.processes.drain_rig import Load, answered_after_sigterm, objects, rig, sigterms
from harness.processes.endpoint_follower import HAPROXY_INGRESS, HAPROXYTECH
from harness.processes.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="the test node needs root")]


@pytest.fixture(scope="module")
def chart(node_cluster: K8sCluster, k8s_node: Node) -> Iterator[None]:
    install_chart(node_cluster, "candor-drain")
    yield
    uninstall_chart(node_cluster, "candor-drain")


def _job_seconds(text: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "job_worked_seconds_total")


class Observer:
    """Polls HAProxy's view of one server, the sidecar's /health and its /metrics, noting first times."""

    def __init__(self, haproxy: Any, backend: str, slot: str, ip: str) -> None:
        self.haproxy, self.backend, self.slot, self.ip = haproxy, backend, slot, ip
        self.left_rotation: float | None = None  # first seen in DRAIN (heard) or MAINT (removed by the controller)
        self.sidecar_terminating: float | None = None
        self.scrapes: list[tuple[float, float]] = []  # (time, job seconds) of each successful /metrics read
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._haproxy, daemon=True),
                         threading.Thread(target=self._sidecar, daemon=True)]

    def _haproxy(self) -> None:
        while not self._stop.is_set() and self.left_rotation is None:
            if self.haproxy.server_state(self.backend, self.slot).status.startswith(("DRAIN", "MAINT")):
                self.left_rotation = time.monotonic()
            self._stop.wait(0.01)

    def _health_notes(self) -> list[str]:
        try:
            with urllib.request.urlopen(f"http://{self.ip}:9898/health", timeout=1) as response:
                body = response.read()
        except urllib.error.HTTPError as failing:  # a terminating sidecar's /health answers 503
            body = failing.read()
        notes: list[str] = json.loads(body).get("notes", [])
        return notes

    def _sidecar(self) -> None:
        # Scrapes like Prometheus, except that once the drain has begun it holds its scrapes until /health
        # says the sidecar itself got SIGTERM: the scrape after that is the final one (the sidecar exits once
        # it is served), so the observer sees the sidecar's SIGTERM for certain before it ends it.
        while not self._stop.is_set():
            try:
                notes = " ".join(self._health_notes())
                if self.sidecar_terminating is None and "sidecar terminating" in notes:
                    self.sidecar_terminating = time.monotonic()
                if self.sidecar_terminating is not None or "pod terminating" not in notes:
                    with urllib.request.urlopen(f"http://{self.ip}:9898/metrics", timeout=1) as response:
                        self.scrapes.append((time.monotonic(), _job_seconds(response.read().decode())))
            except (OSError, ValueError):
                pass
            self._stop.wait(0.05)

    def __enter__(self) -> Observer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


def _drained_event(cluster: K8sCluster, namespace: str, pod: str) -> dict[str, Any] | None:
    listed = cluster.api("GET", f"/api/v1/namespaces/{namespace}/events",
                         params={"fieldSelector": f"reason=Drained,involvedObject.name={pod}"}).ok()["items"]
    return listed[0] if listed else None


@pytest.mark.parametrize("controller", [HAPROXYTECH, HAPROXY_INGRESS])
def test_the_pod_leaves_haproxy_before_the_app_gets_sigterm_and_no_job_second_is_lost(
    node_cluster: K8sCluster, chart: None, tmp_path: Path, controller: str,
) -> None:
    namespace = node_cluster.create_namespace()
    events = tmp_path / "events"
    events.mkdir()
    events.chmod(0o777)  # the app runs as uid 10001
    # Two replicas: while one leaves, HAProxy has the other to send requests to.
    node_cluster.apply(*objects(namespace, events, replicas=2, cells=("candor",), controller=controller))
    try:
        def injected_pod() -> dict[str, Any] | None:
            pods = node_cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods",
                                   params={"labelSelector": "app=candor"}).ok()["items"]
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p.get("status", {}).get("conditions", []))
                     and any(c["name"] == "candor-sidecar" for c in p["spec"].get("initContainers", []))]
            return ready[0] if len(pods) == len(ready) == 2 else None

        pod = node_cluster.wait_until(injected_pod, 240, "the injected pod ready")
        name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
        front = free_port()
        with rig(node_cluster, namespace, {"candor": front}, controller) as (haproxy, followers):
            follower = followers["candor"]
            slots = node_cluster.wait_until(
                lambda: len(follower.events) >= 2 and [e.slot for e in follower.events], 60, "both pods in slots")
            node_cluster.wait_until(lambda: all(haproxy.server_state("candor", s).status.startswith("UP")
                                               for s in slots), 60, "HAProxy routes to both pods")
            slot = follower.slot_for(ip)
            assert slot is not None
            with Observer(haproxy, "candor", slot, ip) as seen, Load((front,), 100) as load:
                node_cluster.wait_until(lambda: len(seen.scrapes) > 2 and len(load.answers) > 50, 30,
                                       "scrapes of the sidecar and requests through HAProxy")
                deleted = time.monotonic()
                node_cluster.kubectl("delete", "pod", "-n", namespace, name, "--wait=true", "--timeout=120s")
        app_sigterm = sigterms(events)[name]
        assert seen.left_rotation is not None and seen.sidecar_terminating is not None, vars(seen)
        # HAProxy had stopped sending the pod requests before its app got SIGTERM: none sent after it
        # reached the app, and none failed.
        assert load.failed() == [] and answered_after_sigterm(load, events) == []
        assert [a for a in load.answers if a.pod == name], "the leaving pod served requests before"
        final_at, final = seen.scrapes[-1]
        order = {"deleted": deleted, "out of HAProxy's rotation": seen.left_rotation, "app SIGTERM": app_sigterm,
                 "sidecar SIGTERM": seen.sidecar_terminating,
                 "final scrape": final_at}
        assert list(order.values()) == sorted(order.values()), order
        truth = sum((i.end if i.end is not None else app_sigterm) - i.start
                    for i in read_intervals(events / f"{name}.truth"))
        print(f"{controller}: out of rotation in HAProxy's stats {seen.left_rotation - deleted:+.2f} s after the "
              "delete; order: "
              + ", ".join(f"{k} {v - deleted:+.2f}" for k, v in order.items())
              + f"; job seconds: truth {truth:.3f}, final scrape {final:.3f}")
        assert final == pytest.approx(truth, abs=0.05), (final, truth)
        # The kubelet copied the sidecar's drain summary into the pod's status; the operator posted it on the pod.
        event = node_cluster.wait_until(lambda: _drained_event(node_cluster, namespace, name), 30,
                                        "the pod's Drained Event")
        drained = read_event_message(event["message"])
        # One HAProxy, told or having taken the server out: not `timeout`. (`silent`, a Warning, when the
        # sidecar recorded HAProxy's last /health check late on this busy machine: HAProxy's stats above
        # show the server out of rotation before the app's SIGTERM, whatever the Event calls it.)
        assert drained is not None and drained.outcome in ("heard", "removed", "silent"), event
        assert drained.heard + drained.removed + drained.silent == 1 and drained.timed_out == 0, drained
        assert drained.seconds <= app_sigterm - deleted, (drained, app_sigterm - deleted)
    finally:
        node_cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")
