"""The real sidecar leaves each drain's summary in its termination message file, as the kubelet will copy it into
the pod's status for the operator's Drained Event: the figures of a drain two real HAProxys took part in (one
heard it, one took the server out), and a drain the sidecar's exit cut short.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from candor_demo.haproxy_process import HAProxyProcess
from candor_sidecar.drain.summary import DrainSummary, parse_summary
from harness.processes.sidecar_process import SidecarProcess
from harness.processes.two_balancers import AGENT_INTER, polled_pod
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration


def _termination_log(tmp_path: Path) -> Path:
    """The file as the kubelet makes it: empty, before the container starts."""
    path = tmp_path / "termination-log"
    path.write_text("")
    return path


def _summary(path: Path) -> DrainSummary | None:
    return parse_summary(path.read_text())


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[SidecarProcess, dict[str, HAProxyProcess], Path]]:
    log = _termination_log(tmp_path)
    with polled_pod(tmp_path / "state", ["--termination-message-path", str(log)]) as (sidecar, balancers):
        yield sidecar, balancers, log


def test_a_drain_leaves_its_figures_and_the_sidecars_exit_keeps_them(
        pod: tuple[SidecarProcess, dict[str, HAProxyProcess], Path]) -> None:
    sidecar, balancers, log = pod
    assert log.read_text() == ""  # nothing before a drain
    answer: dict[str, str] = {}
    wait = threading.Thread(target=lambda: answer.update(body=sidecar.get("/drain/wait", timeout=60)[2].decode()),
                            daemon=True)
    wait.start()
    # lb2's controller takes the server out as the drain begins (both its checks stop): removed; lb1 hears it.
    balancers["lb2"].command("disable agent app/s1")
    balancers["lb2"].command("disable health app/s1")
    assert sidecar.run_drain().returncode == 0
    wait.join(30)
    summary = wait_until(lambda: _summary(log), 30, "the drain's summary in the termination message file",
                         hint=f"its log: {sidecar.log_path}")
    assert (summary.outcome, summary.begun_by) == ("removed", "preStop"), summary
    assert (summary.heard, summary.removed, summary.silent, summary.timed_out) == (1, 1, 0, 0), summary
    assert 0 < summary.seconds <= 2 * AGENT_INTER + 1.5 and not summary.at_exit, summary
    assert f"drain ended (removed) after {summary.seconds:.2f}s" in sidecar.logs()  # the same figures as its log
    written = log.read_text()
    assert written.endswith("}\n") and written.count("\n") == 1 and len(written.encode()) < 200

    sidecar.signal(signal.SIGTERM)  # the pod's end: the drain begun by preStop is the one to report
    assert sidecar.wait(30) == 0
    assert log.read_text() == written


def test_a_drain_the_exit_cuts_short_is_left_as_it_stood(tmp_path: Path) -> None:
    log = _termination_log(tmp_path)
    # One poll from a load balancer that polls every 10 s, then SIGTERM: the sidecar exits (no scrape awaited)
    # long before that load balancer could hear the drain.
    config = {"evaluationInterval": "200ms", "finalScrapeTimeout": "0s",
              "drain": {"agentInterval": "10s", "maxWait": "20s"}}
    with SidecarProcess(tmp_path / "state", config=config, args=["--termination-message-path", str(log)]) as sidecar:
        assert sidecar.agent_line().startswith("up")
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(30) == 0
    summary = _summary(log)
    assert summary is not None, sidecar.logs()
    assert (summary.outcome, summary.begun_by, summary.at_exit) == ("timeout", "SIGTERM", True), summary
    assert (summary.heard, summary.removed, summary.silent, summary.timed_out) == (0, 0, 0, 1), summary


def test_without_the_file_the_sidecar_drains_and_exits_as_ever(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "termination-log"
    config = {"evaluationInterval": "200ms", "finalScrapeTimeout": "0s"}
    with SidecarProcess(tmp_path / "state", config=config,
                        args=["--termination-message-path", str(missing), "--log-level", "debug"]) as sidecar:
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(30) == 0
    assert not missing.parent.exists()
    assert sidecar.logs().count("no termination message written") == 1, sidecar.logs()
