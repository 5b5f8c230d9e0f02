"""On a machine without /etc/cni, the test node and the image builds leave it without /etc/cni.

A fresh machine has no ``/etc/cni``; the development machines had one, so a write there went unseen until
a fresh machine's first ``make test`` failed on it. This test makes the fresh machine inside a private mount
namespace: ``/etc`` is overlaid there by a scratch directory (with a whiteout hiding ``/etc/cni`` when the
machine has one), so every write under ``/etc`` by the processes in it lands in that scratch directory and
nowhere else. In it, an image is built through buildah as the project's images are, then a standalone node
(containerd, kubelet, a static pod whose sandbox goes through CNI ADD and DEL) starts and stops.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cluster.components import ROOT
from harness.cluster.images import CACHE, SIDECAR_IMAGE
from harness.cluster.node import running_containers
from harness.processes.waiting import wait_until

pytestmark = [
    pytest.mark.integration, pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and the test node need root"),
]

NAME, BRIDGE, SUBNET = "candor-cni", "cnd7", "10.244.76.0/24"
SOCKET = Path("/run/candor-node") / NAME / "containerd.sock"
PROBE_IMAGE = "docker.io/candor/cni-probe:1"


@pytest.fixture
def scratch_etc(tmp_path: Path) -> Iterator[Path]:
    """The overlay's upper directory: what the namespace's processes wrote under /etc."""
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    if os.path.lexists("/etc/cni"):
        os.mknod(upper / "cni", 0o600 | 0o020000, os.makedev(0, 0))  # an overlay whiteout: /etc/cni is absent
    yield upper
    subprocess.run([sys.executable, "-m", "harness.cluster.node", "restore", NAME], cwd=ROOT, check=False)
    for archive in CACHE.glob("cni-probe-*.tar"):
        archive.unlink()


def _in_fresh_etc(upper: Path, command: str) -> list[str]:
    work = upper.parent / "etc-work"
    mount = shlex.join(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir=/etc,upperdir={upper},workdir={work}", "/etc"])
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc",
            f"{mount}\ntest ! -e /etc/cni\n{command}"]


def _written(upper: Path) -> list[str]:
    found = []
    for directory, names, files in os.walk(upper):
        for name in names + files:
            path = Path(directory) / name
            if path == upper / "cni" and path.is_char_device():
                continue  # the whiteout this test put there
            found.append("/etc/" + str(path.relative_to(upper)))
    return sorted(found)


def test_the_image_build_and_the_node_write_no_cni_state_under_etc(tmp_path: Path, scratch_etc: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    # A unique label: the build is never a cache hit, so buildah really runs `bud` here.
    dockerfile.write_text(f"FROM scratch\nCOPY LICENSE /LICENSE\nLABEL candor.probe={uuid.uuid4().hex}\n")
    static_pods = tmp_path / "manifests"
    static_pods.mkdir()
    (static_pods / "sleeper.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {"containers": [{
            "name": "sleeper", "image": SIDECAR_IMAGE, "imagePullPolicy": "Never",
            "command": ["python3", "-c", "import time\nwhile True: time.sleep(60)"],
        }]},
    }))
    build = shlex.join([sys.executable, "-c",
                        "import sys, pathlib; from harness.cluster.images import build_dockerfile; "
                        "build_dockerfile(sys.argv[1], pathlib.Path(sys.argv[2]))", PROBE_IMAGE, str(dockerfile)])
    serve = shlex.join([sys.executable, "-m", "harness.cluster.node", "serve", "--name", NAME, "--bridge", BRIDGE,
                        "--subnet", SUBNET, "--static-pods", str(static_pods)])
    node = subprocess.Popen(_in_fresh_etc(scratch_etc, f"{build}\nexec {serve}"), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        assert line, f"the build or the node exited with {node.wait()} before the node was ready"
        assert json.loads(line)["ready"]
        # The sandbox runs: its network was set up through the node's CNI configuration.
        wait_until(lambda: len(running_containers(SOCKET)) >= 2, timeout=90, what="the static pod's containers running")
        node.send_signal(signal.SIGTERM)  # the static pod's sandbox goes through CNI DEL as the node stops
        assert node.wait(timeout=90) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    assert _written(scratch_etc) == [], "the image build or the node wrote under /etc"
