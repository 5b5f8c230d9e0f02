"""A HealthPolicy met in a namespace that is being deleted, against the real API server.

A cluster-wide operator that starts (or resyncs) while a namespace is going away still sees that
namespace's policies until the namespace controller removes them. Nothing may be created there any
more: the API server refuses the ConfigMap with 403 NamespaceTerminating. That is no failure of the
operator's permissions and nothing to retry; the reconcile leaves the policy alone and says why, instead
of logging a Forbidden traceback (and an Event it could not post) until the namespace is gone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import kopf
import pytest

from candor_operator.handlers import DEPLOYMENTS, POLICIES, SERVICES, CandorOperator
from candor_operator.kube import ApiError
from candor_operator.settings import OperatorSettings
from harness.cluster.control_plane import K8sCluster
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

HOLD = "candor.test/hold"


def _policy(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy",
            "metadata": {"name": "demo", "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1},
            "spec": valid_spec(rollout="Manual")}


def _reconcile(kubeconfig: Path, policy: dict[str, Any]) -> kopf.Patch:
    """One reconcile of ``policy`` by an operator with the credentials of ``kubeconfig``."""
    operator = CandorOperator(OperatorSettings(), kubeconfig=str(kubeconfig))

    async def run() -> kopf.Patch:
        patch = kopf.Patch()
        try:
            await operator.reconcile(kopf.Body(policy), {}, patch, {SERVICES: {}, POLICIES: {}, DEPLOYMENTS: {}})
        finally:
            await operator.close()
        return patch

    return asyncio.run(run())


def test_a_policy_in_a_namespace_being_deleted_is_left_alone(
    k8s_cluster: K8sCluster, k8s_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    cluster.install_crds()
    configmap = f"/api/v1/namespaces/{ns}/configmaps"
    # A ConfigMap whose finalizer nobody else removes keeps the namespace Terminating while the test looks.
    cluster.api("POST", configmap, {"metadata": {"name": "hold", "finalizers": [HOLD]}}).ok()
    try:
        cluster.api("DELETE", f"/api/v1/namespaces/{ns}").ok()
        cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}").ok()["status"].get("phase")
                           == "Terminating", 30, "the namespace terminating")
        with caplog.at_level(logging.INFO, logger="candor.operator"):
            patch = _reconcile(cluster.kubeconfig, _policy(ns))
        assert not patch, "nothing is written to the policy's status"
        assert cluster.api("GET", f"{configmap}/candor-sidecar-demo").status == 404
        assert f"HealthPolicy {ns}/demo: its namespace is being deleted; nothing written" in caplog.text
    finally:
        cluster.api("PATCH", f"{configmap}/hold", {"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json").ok()
    cluster.wait_until(lambda: cluster.api("GET", f"/api/v1/namespaces/{ns}").status == 404, 60, "the namespace gone")


def test_a_refusal_for_any_other_reason_still_fails_the_reconcile(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    """A role without ConfigMap rights is a real problem: it must reach kopf (retried, logged, an Event)."""
    cluster, ns = k8s_cluster, k8s_namespace
    cluster.install_crds()
    token = cluster.service_account_token(f"candor-none-{ns}", [], namespace=ns)
    with pytest.raises(ApiError) as refused:
        _reconcile(cluster.kubeconfig_for_token(token, f"candor-none-{ns}"), _policy(ns))
    assert refused.value.status == 403 and not refused.value.namespace_terminating
