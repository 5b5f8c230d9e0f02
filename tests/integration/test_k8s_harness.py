"""The control-plane harness cleans up after itself: a stopped or abandoned cluster leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import ROOT, K8sCluster

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for every practical purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][:1] != "Z"


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


def test_stop_ends_every_control_plane_process(tmp_path: Path) -> None:
    cluster = K8sCluster(tmp_path, ensure_binaries()).start()
    pids = [process.popen.pid for process in cluster._processes]
    assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    assert cluster.kubectl("get", "namespace", "default", "-o", "name").stdout.strip() == "namespace/default"
    cluster.stop()
    assert _wait_gone(pids, 1.0) == []


def test_control_plane_dies_with_a_killed_test_run(tmp_path: Path) -> None:
    # A test run killed with SIGKILL cannot clean up; the kernel must end its control plane (PR_SET_PDEATHSIG).
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from harness.cluster.components import ensure_binaries\n"
        "from harness.cluster.control_plane import K8sCluster\n"
        "c = K8sCluster(Path(sys.argv[1]), ensure_binaries()).start()\n"
        "print(*[p.popen.pid for p in c._processes], flush=True)\n"
        "time.sleep(300)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        pids = [int(pid) for pid in child.stdout.readline().split()]
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _wait_gone(pids) == []
