"""pytest wiring of the integration tests: the test control plane and node, and the job-framework tests.

Control plane: the session-wide ``k8s_cluster`` and ``k8s_node``, and a ``k8s_namespace`` per test; the cluster
itself is harness/cluster/control_plane.py, the node harness/cluster/node.py. Every test that uses ``k8s_node``
is marked ``node``: ``pytest -m 'not node'`` runs the rest without containerd, a kubelet or images.

Job frameworks (Celery, RQ, gunicorn, uvicorn): a Redis ``broker`` and the ``run`` that records what the
framework's jobs did, a test each; what a run measures is harness/apps/framework_runs.py. A test that needs
the broker lists it before ``run``, so the broker outlives the run's teardown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.apps.framework_runs import DeathWatch, Run
from harness.cluster.components import ensure_binaries
from harness.cluster.control_plane import K8sCluster
from harness.cluster.node import Node, another_node
from harness.processes.redis_server import redis_server

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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own; its URL."""
    with redis_server(tmp_path / "redis") as url:
        yield url


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """The test's state directory (tmp_path/state) and its record of jobs, the deaths of their processes watched."""
    state = tmp_path / "state"
    state.mkdir()
    deaths = DeathWatch()
    try:
        yield Run(state, deaths)
    finally:
        deaths.close()
