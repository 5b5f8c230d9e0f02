"""A real sidecar beside journals no writer could have written, a FIFO, links and a live app.

Before the fix, any one of these blinded the pod: /metrics answered 500 (an overflow) or hung (the
FIFO), the agent said `up` after the app was killed, and a symlink counted the app twice. Here they all
sit in the state directory from the start (a restarted sidecar meets them before it listens): /metrics
must answer 200 with the app's counter counted once, every planted file is counted in
`candor_journals_skipped`, and SIGKILL of the app still turns the agent down.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from candor_tracer.cgroup import NO_FIGURES
from candor_tracer.journal.writer import JournalWriter
from harness.processes.sidecar_process import AppProcess, SidecarProcess
from tests.cases.journal_forge import forge_every_copy, forge_file

pytestmark = pytest.mark.integration

INTERVAL = 0.5
CONFIG = {"evaluationInterval": f"{INTERVAL * 1000:g}ms", "deadlock": {"heartbeatTimeout": "5s"},
          "finalScrapeTimeout": "2s"}


def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def _dead_journal(state: Path) -> tuple[JournalWriter, Path]:
    writer = JournalWriter(state)
    series = writer.series_index("job_worked_seconds", "Seconds spent working on jobs", (("task", "resize"),))
    now = time.monotonic()
    writer.end(writer.start(series, now - 1.0), series, now)
    writer.start(series, now - 0.5)
    writer.start(series, now - 0.5)
    writer.beat(NO_FIGURES)
    writer.close()
    return writer, writer.path


def plant(state: Path) -> list[Path]:
    """The bad files of the adversarial pass: each one blinded or inflated the sidecar before."""
    planted = []
    for forge in (lambda p: [forge_file(p, "slot", "start", 1e308, index=i) for i in (1, 2)],
                  lambda p: [forge_file(p, "slot", "start", math.inf, index=i) for i in (1, 2)],
                  lambda p: forge_file(p, "slot", "start", -1e290, index=1),
                  lambda p: forge_every_copy(p, "series", "total", 1e300),
                  lambda p: forge_every_copy(p, "heartbeat", "alive_at", math.nan)):
        _, path = _dead_journal(state)
        forge(path)
        planted.append(path)
    fifo = state / "journal-77-1-ab.cj"
    os.mkfifo(fifo, 0o444)
    device = state / "journal-78-1-ab.cj"
    device.symlink_to("/dev/zero")
    return [*planted, fifo, device]


def sample(body: str, name: str, labels: str = "") -> float | None:
    """The sample's value, or None while the series is not exposed (yet)."""
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", body, re.MULTILINE)
    return None if match is None else float(match[1])


def metric(body: str, name: str, labels: str = "") -> float:
    value = sample(body, name, labels)
    assert value is not None, f"{name}{labels} not in /metrics:\n{body}"
    return value


def test_bad_journals_fifos_and_links_cost_themselves_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    planted = plant(state)
    with AppProcess(state, "app") as app:
        [journal] = state.glob(f"journal-{app.pid}-*.cj")
        alias = state / journal.name.replace(".cj", "0.cj")
        alias.symlink_to(journal.name)  # a second name for the live app's journal
        planted.append(alias)
        with SidecarProcess(state, config=CONFIG) as sidecar:
            assert app.get("/job?seconds=30")[0] == 202
            # The job's series appears with the app's next journal write and the sidecar's next evaluation.
            _until("the job is counted", lambda: (sample(sidecar.get("/metrics")[2].decode(),
                                                         "job_worked_seconds_total", '{task="resize"}') or 0) > 0.5, 10)
            app_before = metric(app.get("/metrics")[1].decode(), "job_worked_seconds_total", '{task="resize"}')
            status, _, body = sidecar.get("/metrics")
            app_after = metric(app.get("/metrics")[1].decode(), "job_worked_seconds_total", '{task="resize"}')
            assert status == 200
            text = body.decode()
            seen = metric(text, "job_worked_seconds_total", '{task="resize"}')
            # Counted once (the alias would double it), and nothing inflated it (the forged journals).
            assert app_before - 0.2 <= seen <= app_after + 0.2, (app_before, seen, app_after)
            assert metric(text, "candor_journals_skipped") == len(planted)
            assert metric(text, "candor_app_processes") == 1
            health = json.loads(sidecar.get("/health?verbose")[2])
            assert health["checks"]["deadlock:heartbeat"][0]["status"] == "pass"
            assert health["checks"]["journal:readable"][0]["status"] == "warn"

            app.signal(signal.SIGKILL)
            app.process.wait()  # type: ignore[union-attr]
            _until("the agent says the app exited", lambda: sidecar.agent_line() == "down # app exited\n",
                   4 * INTERVAL + 2)
            status, _, body = sidecar.get("/metrics")
            assert status == 200
            assert metric(body.decode(), "job_worked_seconds_total", '{task="resize"}') >= seen
    archive = json.loads((state / "archive.json").read_text())
    assert [s["labels"] for s in archive["series"]] == [[["task", "resize"]]]
    assert 0 < archive["series"][0]["seconds"] < 100  # the app's seconds, nothing forged
    assert all(path.is_symlink() or path.exists() for path in planted if path != alias)  # never folded away
