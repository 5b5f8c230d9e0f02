"""Process-level faults: an app whose CANDOR_STATE_DIR cannot be used still runs and still counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from candor_tracer.journal.reader import read_totals
from harness.apps.tracer_apps import next_message, start_app

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


FULL_APP = """
    traces = [trace(JOB, job=f"s{i % 40}") for i in range(8000)]
    for t in traces:
        t.__enter__()
    time.sleep(0.05)
    for t in traces:
        t.__exit__(None, None, None)
    from prometheus_client import REGISTRY
    total = sum(REGISTRY.get_sample_value("job_worked_seconds_total", {"job": f"s{i}"}) for i in range(40))
    say(total=total, journal=str(default_tracer.journal_path))
"""

MOUNT_TINY_TMPFS = 'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"'


def _private_tmpfs_works(tmp_path: Path) -> bool:
    try:
        result = subprocess.run(["unshare", "-m", "sh", "-c", MOUNT_TINY_TMPFS, str(tmp_path), "true"],
                                capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def test_a_full_state_volume_never_kills_the_app(tmp_path: Path) -> None:
    """A 256 KiB tmpfs (like a small emptyDir) fills up: the tracer keeps counting in-process, no SIGBUS."""
    state_dir = tmp_path / "tiny"
    state_dir.mkdir()
    if not _private_tmpfs_works(state_dir):
        pytest.skip("needs `unshare -m` and mount (root) for a private tmpfs")
    app = start_app(FULL_APP, state_dir, prefix=["unshare", "-m", "sh", "-c", MOUNT_TINY_TMPFS, str(state_dir)])
    message = next_message(app)
    _, stderr = app.communicate(timeout=60)
    assert app.returncode == 0, stderr
    assert message["journal"] != "None"  # journal mode was on, then ran out of room
    assert message["total"] >= 8000 * 0.05
    warnings = [line for line in stderr.splitlines() if "candor" in line]
    assert len(warnings) == 1 and "no space" in warnings[0], stderr


FULL_READER = """
    import logging
    from prometheus_client import REGISTRY
    from candor_tracer import Tracer
    from candor_tracer.journal.reader import read_totals
    state = sys.argv[1]
    tracer = Tracer(state_dir=state)
    with tracer.trace(JOB, job="a"):
        time.sleep(0.05)
    tracer.close()  # a dead journal, to be folded
    filler = os.path.join(state, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    size = 1 << 20
    while size >= 512:  # fill the volume to the last block
        try:
            os.posix_fallocate(fd, os.fstat(fd).st_size, size)
        except OSError:
            size //= 2
    os.close(fd)
    logging.basicConfig(level=logging.WARNING)
    full = read_totals(state)
    os.unlink(filler)
    freed = read_totals(state)
    say(expected=REGISTRY.get_sample_value("job_worked_seconds_total", {"job": "a"}),
        full=[s.value for s in full.series], freed=[s.value for s in freed.series],
        files=sorted(os.listdir(state)))
"""


def test_a_reader_on_a_full_volume_counts_dead_journals_in_place_and_folds_later(tmp_path: Path) -> None:
    state_dir = tmp_path / "tiny"
    state_dir.mkdir()
    if not _private_tmpfs_works(state_dir):
        pytest.skip("needs `unshare -m` and mount (root) for a private tmpfs")
    prefix = ["unshare", "-m", "sh", "-c", MOUNT_TINY_TMPFS, str(state_dir)]
    app = start_app(FULL_READER.replace("sys.argv[1]", repr(str(state_dir))), None, prefix=prefix)
    message = next_message(app)
    _, stderr = app.communicate(timeout=60)
    assert app.returncode == 0, stderr
    assert message["full"] == [pytest.approx(message["expected"], abs=1e-6)]
    assert message["freed"] == message["full"]
    assert "archive.json" in message["files"] and not any(f.startswith("journal-") for f in message["files"])
    assert "cannot save the archive" in stderr


SIGNAL_APP = """
    import signal, threading
    from prometheus_client import REGISTRY, generate_latest
    handled = 0

    def on_signal(signum, frame):  # a handler that scrapes and traces, e.g. a final push on SIGTERM
        global handled
        generate_latest(REGISTRY)
        with trace(JOB, job="handler"):
            pass
        handled += 1

    signal.signal(signal.SIGUSR1, on_signal)

    def sender():  # every 5 ms: often while the main thread is inside the tracer's lock
        for _ in range(300):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.005)

    sending = threading.Thread(target=sender, daemon=True)
    sending.start()
    loops = 0
    while sending.is_alive():  # every signal lands while the main thread traces in a tight loop
        with trace(JOB, job="main"):  # the main thread is inside the tracer much of the time
            loops += 1
    values = {job: REGISTRY.get_sample_value("job_worked_seconds_total", {"job": job}) for job in ("main", "handler")}
    default_tracer.close()
    say(handled=handled, loops=loops, values=values)
"""


def test_signal_handlers_that_scrape_and_trace_never_deadlock(tmp_path: Path) -> None:
    """Real signals land while the main thread holds the tracer's lock: no deadlock, and the journal
    agrees with the in-process counter (traces a handler starts mid-update are journaled afterwards)."""
    app = start_app(SIGNAL_APP, tmp_path)
    message = next_message(app, timeout=60)
    _, stderr = app.communicate(timeout=30)
    assert app.returncode == 0, stderr
    assert message["handled"] >= 50 and message["loops"] > 1000
    totals = {s.labels[0][1]: s.value for s in read_totals(tmp_path).series}
    for job in ("main", "handler"):
        assert totals[job] == pytest.approx(message["values"][job], abs=1e-6), job
