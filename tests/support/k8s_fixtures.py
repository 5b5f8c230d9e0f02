"""pytest wiring of the test control plane: the session-wide ``k8s_cluster`` and ``k8s_node``, and a
``k8s_namespace`` per test.

Registered in tests/conftest.py (``pytest_plugins``); the cluster itself is tests/support/k8s_cluster.py, the
node tests/support/node.py. Every test that uses ``k8s_node`` is marked ``node``: ``pytest -m 'not node'``
runs the rest without containerd, a kubelet or images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.k8s_cluster import K8sCluster
from tests.support.k8s_processes import ensure_binaries
from tests.support.node import Node, another_node

_BIN_DIR = pytest.StashKey[Path]()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"k8s_node", "second_node"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.node)
    # The crash-recovery test runs its own node with the machine to itself: before the session's node starts.
    items.sort(key=lambda item: not item.get_closest_marker("node_exclusive"))
    # Build here, before any test starts, so a first-time compile does not count against a test's timeout.
    if any({"k8s_cluster", "node_cluster"} & set(getattr(item, "fixturenames", ())) for item in items):
        capture = config.pluginmanager.getplugin("capturemanager")
        # Show build.sh's progress: a first build takes minutes and should not look like a hang.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            config.stash[_BIN_DIR] = ensure_binaries()


@pytest.fixture(scope="session")
def k8s_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    yield from _control_plane(request, tmp_path_factory, "k8s")


@pytest.fixture
def k8s_namespace(k8s_cluster: K8sCluster) -> Iterator[str]:
    name = k8s_cluster.create_namespace()
    yield name
    k8s_cluster.api("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="session")
def node_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    """A control plane of the node's own: the chart installs cluster-wide objects (CRDs, webhook, roles)
    that must not meet what other tests put in the shared ``k8s_cluster``."""
    yield from _control_plane(request, tmp_path_factory, "k8s-node")


@pytest.fixture(scope="session")
def k8s_node(node_cluster: K8sCluster) -> Iterator[Node]:
    node = Node(cluster=node_cluster).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def second_node(node_cluster: K8sCluster, k8s_node: Node) -> Iterator[Node]:
    """A second node in the node's cluster, for the tests of one module only: the other node tests expect
    their pods on ``k8s_node`` (they read its cgroups), so it leaves again (and its Node object with it)."""
    node = another_node(node_cluster, 2).start()
    try:
        yield node
    finally:
        node.stop()


def _control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   name: str) -> Iterator[K8sCluster]:
    bin_dir = request.config.stash.get(_BIN_DIR, None) or ensure_binaries()
    cluster = K8sCluster(tmp_path_factory.mktemp(name), bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.stop()
