"""Real HAProxy 2.6 driven by two real sidecars' agent-checks, each next to a real traced app.

What a user would see: a stalled app leaves rotation within agent-inter + 1 s and traffic goes to the
other server; after healing its weight climbs over slowStart; the maintenance annotation puts it in
MAINT and back; SIGTERM of a sidecar drains its server.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from candor_demo.haproxy_process import HAProxyProcess
from harness.processes.ports import free_port
from harness.processes.sidecar_process import AppProcess, SidecarProcess

pytestmark = pytest.mark.integration

AGENT_INTER = 1.0
SLOW_START = 8.0


def _config(frontend: int, pairs: list[tuple[str, AppProcess, SidecarProcess]]) -> str:
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{app.port} weight 100 check port {sidecar.http_port} inter 1s rise 2 fall 3"
        f" agent-check agent-addr 127.0.0.1 agent-port {sidecar.agent_port} agent-inter {AGENT_INTER:g}s"
        + (" agent-send candor-check-from-haproxy" if name == "s2" else "")  # sent or not: never waited for
        for name, app, sidecar in pairs)
    return _frontend_and_backend(frontend, f"    balance roundrobin\n    option httpchk GET /health\n{servers}\n")


def _frontend_and_backend(frontend: int, backend_body: str) -> str:
    """An HTTP frontend on `frontend` in front of backend `app` with the given lines."""
    return f"""
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    retries 0

frontend web
    bind 127.0.0.1:{frontend}
    default_backend app

backend app
{backend_body}"""


def _poll(predicate_name: str, check: object, timeout: float, interval: float = 0.05) -> float:
    """Calls `check()` until truthy; returns the monotonic time it became so."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"{predicate_name} not reached within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[HAProxyProcess, dict[str, tuple[AppProcess, SidecarProcess]], int]]:
    config = {"slowStart": f"{SLOW_START:g}s", "maxConn": 30, "evaluationInterval": "200ms",
              "deadlock": {"heartbeatTimeout": "2s"}, "finalScrapeTimeout": "10s"}
    with ExitStack() as stack:
        pairs = []
        for name in ("s1", "s2"):
            state = tmp_path / name
            app = stack.enter_context(AppProcess(state, name))
            sidecar = stack.enter_context(SidecarProcess(state, config=config))
            pairs.append((name, app, sidecar))
        frontend = free_port()
        haproxy = stack.enter_context(HAProxyProcess(_config(frontend, pairs)))
        yield haproxy, {name: (app, sidecar) for name, app, sidecar in pairs}, frontend


def _who_answers(frontend: int, count: int) -> list[str]:
    import http.client

    names = []
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", frontend, timeout=5)
        connection.request("GET", "/")
        names.append(connection.getresponse().read().decode().strip().removeprefix("hello from "))
        connection.close()
    return names


def test_agent_check_drives_haproxy_server_states(
        cluster: tuple[HAProxyProcess, dict[str, tuple[AppProcess, SidecarProcess]], int]) -> None:
    haproxy, pods, frontend = cluster
    app1, sidecar1 = pods["s1"]
    _app2, sidecar2 = pods["s2"]

    def status(server: str) -> str:
        return haproxy.server_state("app", server).base_status

    _poll("both UP", lambda: status("s1") == "UP" and status("s2") == "UP", 15)
    assert set(_who_answers(frontend, 10)) == {"s1", "s2"}

    # 1. Stall s1's app for real: its heartbeat stops, its sidecar says down, HAProxy takes it out.
    app1.signal(signal.SIGSTOP)
    detected = _poll("s1 sidecar says down", lambda: sidecar1.agent_line().startswith("down"), 10)
    assert "no heartbeat" in sidecar1.agent_line()
    down_at = _poll("s1 DOWN in HAProxy", lambda: status("s1") == "DOWN", 10, interval=0.02)
    assert down_at - detected <= AGENT_INTER + 1.0, f"DOWN {down_at - detected:.2f}s after the sidecar said down"
    assert _who_answers(frontend, 10) == ["s2"] * 10

    # 2. Heal it: UP again, and the weight climbs over slowStart (HAProxy's view, from the stats socket).
    app1.signal(signal.SIGCONT)
    healed = _poll("s1 sidecar says up", lambda: " up " in f" {sidecar1.agent_line()}", 10)
    samples: list[tuple[float, str, int]] = []
    while time.monotonic() - healed < SLOW_START + 3:
        state = haproxy.server_state("app", "s1")
        samples.append((time.monotonic() - healed, state.base_status, state.weight))
        time.sleep(0.25)
    up_weights = [weight for _, state, weight in samples if state == "UP"]
    assert up_weights, samples
    assert up_weights == sorted(up_weights), f"weight must only climb: {samples}"
    assert up_weights[0] < 50 and up_weights[-1] == 100, samples
    assert len(set(up_weights)) >= 4, f"a ramp, not a step: {samples}"
    full_at = next(t for t, state, weight in samples if state == "UP" and weight == 100)
    assert SLOW_START * 0.7 <= full_at <= SLOW_START + 2.5, samples

    # 3. Maintenance annotation: MAINT; removed: back in rotation.
    sidecar1.set_annotations({"candor.io/maintenance": "true"})
    _poll("s1 MAINT", lambda: status("s1") == "MAINT", AGENT_INTER + 3)
    assert _who_answers(frontend, 6) == ["s2"] * 6
    sidecar1.set_annotations({"candor.io/maintenance": "false"})
    _poll("s1 UP after maintenance", lambda: status("s1") == "UP", AGENT_INTER + 3)

    # 4. SIGTERM of s2's sidecar: HAProxy drains s2 (no new traffic), s1 takes it all.
    assert sidecar2.get("/metrics")[0] == 200  # scraped once, as by Prometheus: it holds for a final scrape
    sidecar2.signal(signal.SIGTERM)
    _poll("s2 DRAIN", lambda: status("s2") == "DRAIN", AGENT_INTER + 3)
    assert _who_answers(frontend, 6) == ["s1"] * 6
    assert sidecar2.process is not None and sidecar2.process.poll() is None  # still waiting for its final scrape


def test_a_disk_threshold_below_real_usage_takes_the_server_down(tmp_path: Path) -> None:
    """The other real failure: a sidecar whose disk check fails keeps its server out of rotation from its start."""
    import os

    stat = os.statvfs(tmp_path)
    used = 100.0 * (stat.f_blocks - stat.f_bfree) / (stat.f_blocks - stat.f_bfree + stat.f_bavail)
    config = {"disk": {"paths": [str(tmp_path)], "maxPercent": max(used / 2, 0.01)}, "slowStart": "0s"}
    healthy_config = {"disk": {"paths": [str(tmp_path)], "maxPercent": 100}, "slowStart": "0s"}
    with ExitStack() as stack:
        app1 = stack.enter_context(AppProcess(tmp_path / "a", "s1"))
        sick = stack.enter_context(SidecarProcess(tmp_path / "a", config=config))
        app2 = stack.enter_context(AppProcess(tmp_path / "b", "s2"))
        fine = stack.enter_context(SidecarProcess(tmp_path / "b", config=healthy_config))
        frontend = free_port()
        haproxy = stack.enter_context(HAProxyProcess(_config(frontend, [("s1", app1, sick), ("s2", app2, fine)])))
        _poll("s2 UP", lambda: haproxy.server_state("app", "s2").base_status == "UP", 10)
        _poll("s1 DOWN", lambda: haproxy.server_state("app", "s1").base_status == "DOWN", AGENT_INTER + 3)
        assert sick.agent_line().startswith(f"down # disk {tmp_path}")
        assert _who_answers(frontend, 6) == ["s2"] * 6


def test_option_httpchk_with_a_bare_uri_sends_options_and_the_sidecar_answers_it(tmp_path: Path) -> None:
    """`option httpchk /health` (what haproxy-ingress's health-check-uri writes) checks with OPTIONS, HTTP/1.0."""
    import os

    stat = os.statvfs(tmp_path)
    used = 100.0 * (stat.f_blocks - stat.f_bfree) / (stat.f_blocks - stat.f_bfree + stat.f_bavail)
    healthy = {"disk": {"paths": [str(tmp_path)], "maxPercent": 100}}
    failing = {"disk": {"paths": [str(tmp_path)], "maxPercent": max(used / 2, 0.01)}}
    with ExitStack() as stack:
        app1 = stack.enter_context(AppProcess(tmp_path / "a", "s1"))
        fine = stack.enter_context(SidecarProcess(tmp_path / "a", config=healthy))
        app2 = stack.enter_context(AppProcess(tmp_path / "b", "s2"))
        sick = stack.enter_context(SidecarProcess(tmp_path / "b", config=failing))
        servers = "\n".join(f"    server {name} 127.0.0.1:{app.port} check port {sidecar.http_port} inter 200ms"
                            " rise 2 fall 2" for name, app, sidecar in (("s1", app1, fine), ("s2", app2, sick)))
        frontend = free_port()
        haproxy = stack.enter_context(HAProxyProcess(
            _frontend_and_backend(frontend, f"    option httpchk /health\n{servers}\n")))
        _poll("s1 UP", lambda: haproxy.server_state("app", "s1").base_status == "UP", 10)
        _poll("s2 DOWN", lambda: haproxy.server_state("app", "s2").base_status == "DOWN", 10)
        # Exposure, not synchronisation: five more checks (inter 200ms) of each, UP stays UP (no 405
        # flapping it down), DOWN stays DOWN.
        time.sleep(1.0)
        assert haproxy.server_state("app", "s1").base_status == "UP"
        assert haproxy.server_state("app", "s2").base_status == "DOWN"
        codes = {row["svname"]: row["check_code"] for row in haproxy.stat_rows() if row["pxname"] == "app"}
        assert codes["s1"] == "200" and codes["s2"] == "503", codes  # the sidecar's verdict, never 405
        assert _who_answers(frontend, 6) == ["s1"] * 6


def test_the_agent_lifts_only_the_admin_states_it_set(tmp_path: Path) -> None:
    """`ready` cancels any MAINT, so an operator's (runtime API) must outlive the agent; the sidecar's own
    MAINT is lifted even when the sidecar crashed in it and the annotation went away meanwhile."""
    config = {"slowStart": "0s", "evaluationInterval": "200ms"}
    with ExitStack() as stack:
        app = stack.enter_context(AppProcess(tmp_path / "a", "s1"))
        sidecar = stack.enter_context(SidecarProcess(tmp_path / "a", config=config))
        frontend = free_port()
        haproxy = stack.enter_context(HAProxyProcess(_config(frontend, [("s1", app, sidecar)])))

        def status() -> str:
            return haproxy.server_state("app", "s1").base_status

        _poll("s1 UP", lambda: status() == "UP", 10)
        # 1. An operator's maintenance, seconds after the sidecar started: the agent leaves it alone.
        haproxy.command("set server app/s1 state maint")
        answered = sidecar.agent_answers()
        _poll("three agent polls in MAINT", lambda: sidecar.agent_answers() >= answered + 3, 3 * AGENT_INTER + 5)
        assert status() == "MAINT", "the agent cancelled a MAINT set through HAProxy's runtime API"
        haproxy.command("set server app/s1 state ready")
        _poll("s1 UP after the operator's ready", lambda: status() == "UP", AGENT_INTER + 3)

        # 2. The sidecar's own maintenance; it crashes; the annotation goes; its successor lifts the MAINT.
        sidecar.set_annotations({"candor.io/maintenance": "true"})
        _poll("s1 MAINT", lambda: status() == "MAINT", AGENT_INTER + 3)
        sidecar.kill()
        sidecar.set_annotations({})
        sidecar.start()
        assert sidecar.agent_line().startswith("ready up")
        _poll("s1 UP after the restarted sidecar's ready", lambda: status() == "UP", AGENT_INTER + 3)
