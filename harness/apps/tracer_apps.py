"""Real app processes for the tracer's journal tests, and readers run as separate processes.

An app is a Python snippet run with CANDOR_STATE_DIR set; it talks to the test through JSON lines on
stdout. A reader "restart" is a fresh interpreter calling read_totals, as a restarted sidecar would.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = textwrap.dedent("""
    import json, os, sys, time
    from prometheus_client import Counter
    from candor_tracer import default_tracer, heartbeat, trace
    JOB = Counter("job_worked_seconds_total", "Seconds spent working on jobs", ["job"])

    def say(**fields):
        # one write(2) per line: forked children share the pipe, and with PYTHONUNBUFFERED print()
        # would write the text and its newline separately, interleaving lines
        os.write(1, (json.dumps(fields) + "\\n").encode())
""")


def app_env(state_dir: Path | str | None, heartbeat_interval: float = 0.5) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tracer"), str(ROOT)])
    env["CANDOR_HEARTBEAT_INTERVAL"] = str(heartbeat_interval)
    env.pop("CANDOR_STATE_DIR", None)
    if state_dir is not None:
        env["CANDOR_STATE_DIR"] = str(state_dir)
    return env


def start_app(code: str, state_dir: Path | str | None, heartbeat_interval: float = 0.5,
              prefix: list[str] | None = None) -> subprocess.Popen[str]:
    """Run PRELUDE + `code` in a new interpreter (optionally behind `prefix`, e.g. unshare)."""
    script = PRELUDE + textwrap.dedent(code)
    # its own session, so stop_app can kill the children it forked too (they hold the pipes open)
    return subprocess.Popen([*(prefix or []), sys.executable, "-c", script], env=app_env(state_dir, heartbeat_interval),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


# Bytes read past the last line, per app pid. The pipe is read with os.read, never through the text
# wrapper: its buffer would hide a second line that arrived with the first from select().
_unread: dict[int, bytes] = {}


def next_message(proc: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, Any]:
    """The app's next JSON line; fails with its stderr when it exits or stays silent."""
    assert proc.stdout is not None
    fd, deadline = proc.stdout.fileno(), time.monotonic() + timeout
    buffered = _unread.pop(proc.pid, b"")
    while b"\n" not in buffered:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            err = stop_app(proc)
            raise AssertionError(f"app sent nothing within {timeout} s (exit {proc.returncode}); stderr:\n{err}")
        buffered += chunk
    line, _, _unread[proc.pid] = buffered.partition(b"\n")
    message: dict[str, Any] = json.loads(line)
    return message


READER = textwrap.dedent("""
    import json, sys
    from candor_tracer.journal.reader import read_totals
    snap = read_totals(sys.argv[1])
    print(json.dumps({
        "series": [[s.name, [list(p) for p in s.labels], s.value] for s in snap.series],
        "writers": [[w.journal, w.pid, w.inflight] for w in snap.writers],
        "skipped": list(snap.skipped),
        "now": snap.now,
    }))
""")


def read_in_new_process(state_dir: Path | str) -> dict[str, Any]:
    """read_totals in a fresh interpreter: what a restarted sidecar would report."""
    result = subprocess.run([sys.executable, "-c", READER, str(state_dir)], env=app_env(None),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    reading: dict[str, Any] = json.loads(result.stdout)
    return reading


def series_value(reading: dict[str, Any], job: str, name: str = "job_worked_seconds") -> float:
    for series_name, labels, value in reading["series"]:
        if series_name == name and labels == [["job", job]]:
            return float(value)
    return 0.0


def stop_app(proc: subprocess.Popen[str]) -> str:
    """Kill the app and everything it forked; its stderr."""
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    return err
