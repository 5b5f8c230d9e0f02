"""``make cluster`` (``python -m harness.cluster --nodes N``): a control plane and (as root) its nodes for a
human; prints the KUBECONFIG; Ctrl-C or SIGTERM stops everything and restores the machine."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.node import Node, another_node


def main(argv: list[str] | None = None) -> None:
    """``make cluster``: a control plane and (as root) its nodes for a human; stop on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m harness.cluster")
    parser.add_argument("--nodes", type=int, default=1, choices=range(1, 4), help="nodes to start (1-3)")
    args = parser.parse_args(argv)
    bin_dir = ensure_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="candor-k8s-"))
    cluster = K8sCluster(workdir, bin_dir).start()
    print(f"control plane ready in {cluster.startup_seconds:.1f} s at {cluster.server}")
    nodes: list[Node] = []
    if os.geteuid() == 0:
        try:
            nodes.append(Node(cluster=cluster).start())
            nodes += [another_node(cluster, number).start() for number in range(2, args.nodes + 1)]
        except BaseException:
            for node in reversed(nodes):
                node.stop()
            cluster.stop()
            raise
        for node in nodes:
            print(f"node {node.name!r} ready in {node.startup_seconds:.1f} s: pods get addresses on {node.bridge} "
                  f"({node.subnet}), reachable from this machine")
        print("images loaded: " + ", ".join(image.name for image in nodes[0].images))
    else:
        print("not root: no node (pods stay Pending); run `sudo make cluster` for one")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"logs: {cluster.logs_dir}" + "".join(f" and {node.logs_dir}" for node in nodes)
          + "   (Ctrl-C stops everything)", flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            cluster._check_alive()
            for node in nodes:
                node.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for node in reversed(nodes):
            node.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("control plane stopped")


if __name__ == "__main__":
    main()
