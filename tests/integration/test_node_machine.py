"""The test node leaves the machine as it found it: after a clean stop, and after the test run was SIGKILLed.

Runs a standalone kubelet (static pods, no control plane) in a child process, on its own bridge and subnet,
before the session's node starts (marker ``node_exclusive``), and compares what the machine looks like
(interfaces, mounts, sysctls, cgroups, nat rules, the fixed paths the kubelet and containerd use).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cluster.components import ROOT
from harness.cluster.images import SIDECAR_IMAGE
from harness.cluster.node import running_containers
from harness.cluster.node_machine import machine_snapshot
from harness.processes.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.node_exclusive]

NAME, BRIDGE, SUBNET = "candor-crash", "cnd8", "10.244.78.0/24"
SOCKET = Path("/run/candor-node") / NAME / "containerd.sock"


def _static_pod(directory: Path) -> Path:
    directory.mkdir()
    (directory / "sleeper.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {"containers": [{
            "name": "sleeper", "image": SIDECAR_IMAGE, "imagePullPolicy": "Never",
            "command": ["python3", "-c", "import time\nwhile True: time.sleep(60)"],
        }]},
    }))
    return directory


def _shims() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and str(SOCKET).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
    subprocess.run([sys.executable, "-m", "harness.cluster.node", "restore", NAME], cwd=ROOT, check=False)


def _start(serve: list[subprocess.Popen[str]], static_pods: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cluster.node", "serve", "--name", NAME, "--bridge", BRIDGE,
         "--subnet", SUBNET, "--static-pods", str(static_pods)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    serve.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the node exited with {process.wait()} before it was ready"
    assert json.loads(line)["ready"]
    # The pod sandbox and the sleeper both run: the node has made mounts, a netns, veths and cgroups.
    wait_until(lambda: len(running_containers(SOCKET)) >= 2, timeout=90, what="the static pod's containers running")
    return process


@pytest.mark.skipif(os.geteuid() != 0, reason="the test node needs root (containerd, kubelet, interfaces)")
def test_a_crashed_node_is_undone_and_a_second_run_starts_clean(
    tmp_path: Path, serve: list[subprocess.Popen[str]],
) -> None:
    before = machine_snapshot()
    static_pods = _static_pod(tmp_path / "manifests")

    first = _start(serve, static_pods)
    during = machine_snapshot()
    assert BRIDGE in during["links"] and during["mounts"] != before["mounts"], "the node changed nothing?"

    first.send_signal(signal.SIGKILL)  # as if the whole test run were killed: no stop() runs
    first.wait()
    assert _shims(), "a killed run leaves containerd's shims and the pod running"

    second = _start(serve, static_pods)  # finds the record, restores, and starts afresh
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0

    after = machine_snapshot()
    assert not _shims()
    for key, value in before.items():
        assert after[key] == value, f"{key} differs after the node stopped"
