"""Process-level faults: an app whose CANDOR_STATE_DIR cannot be used still runs and still counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tracer_apps import next_message, start_app

pytestmark = pytest.mark.integration

APP = """
    for _ in range(5):
        with trace(JOB, job="a"):
            time.sleep(0.02)
    heartbeat()
    from prometheus_client import REGISTRY
    say(value=REGISTRY.get_sample_value("job_worked_seconds_total", {"job": "a"}),
        journal=str(default_tracer.journal_path))
"""


def test_an_unusable_state_directory_means_in_process_mode_and_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    state_dir = blocker / "candor"
    app = start_app(APP, state_dir)
    message = next_message(app)
    _, stderr = app.communicate(timeout=30)
    assert app.returncode == 0, stderr
    assert message["value"] >= 5 * 0.02
    assert message["journal"] == "None"
    warnings = [line for line in stderr.splitlines() if "candor" in line]
    assert len(warnings) == 1, stderr
    assert str(state_dir) in warnings[0] and "in-process" in warnings[0]
