"""The operator survives its credentials being revoked and renewed, against the real API server.

The operator runs as a ServiceAccount bound to exactly the documented RBAC. Deleting the
ServiceAccount revokes its token mid-test: kopf's watches and Candor's own writes get 401. While
they do, `/healthz` fails (so a kubelet would restart the operator) and kopf's re-logins are paced,
not a busy loop. Then a new token is written where the kubeconfig says (a rewritten token file, or
a rewritten kubeconfig), and without a restart the writes resume: the policy created while the
token was revoked gets its ConfigMap, and a policy created afterwards does too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from candor_operator.webhook import RBAC_RULES
from harness.cluster.control_plane import K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
RELOGIN = "Re-authentication has been initiated"


def make_policy(cluster: K8sCluster, ns: str, name: str) -> None:
    cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name},
        "spec": valid_spec(rollout="Manual")}).ok()


def has_config_map(cluster: K8sCluster, ns: str, policy: str) -> bool:
    return cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-{policy}").status == 200


def replace_file(path: Path, text: str) -> None:
    """Atomically, as the kubelet renews a projected token: readers see the old file or the new one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    temporary.chmod(0o600)
    os.replace(temporary, path)


@pytest.mark.parametrize("renewal", ["token file", "kubeconfig"])
def test_writes_resume_after_a_revoked_token_is_renewed(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path, renewal: str
) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    cluster.install_crds()
    account = f"candor-op-{ns}"
    token_file = tmp_path / "token"

    def issue_token() -> str:
        return cluster.service_account_token(account, RBAC_RULES, namespace=ns)

    renew: Callable[[str], None]
    first_token = issue_token()
    if renewal == "token file":
        replace_file(token_file, first_token)
        kubeconfig = cluster.kubeconfig_for_token_file(token_file, account)

        def renew(token: str) -> None:
            replace_file(token_file, token)
    else:
        kubeconfig = cluster.kubeconfig_for_token(first_token, account)
        renewed = cluster.kubeconfig_for_token  # writes the same path, so read its text and swap it in

        def renew(token: str) -> None:
            text = renewed(token, f"{account}-renewed").read_text()
            replace_file(kubeconfig, text)

    try:
        with OperatorProcess(cluster, tmp_path, namespaces=[ns], webhook=False, kubeconfig=kubeconfig) as operator:
            make_policy(cluster, ns, "before")
            cluster.wait_until(lambda: has_config_map(cluster, ns, "before"), 30, "the first policy reconciled")

            # Revoke: the token names a ServiceAccount uid that no longer exists.
            cluster.api("DELETE", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}").ok()
            # The API server caches accepted tokens for a few seconds: wait until it refuses this one.
            cluster.wait_until(lambda: cluster.api("GET", "/version", token=first_token).status == 401, 30,
                               "the token refused")
            make_policy(cluster, ns, "during")
            cluster.wait_until(lambda: not operator.healthy(), 60, "/healthz failing while the token is refused")
            # kopf logs in again after each 401; paced, the fourth login in a row waits 4 s.
            cluster.wait_until(lambda: "(4 in a row)" in operator.log_text(), 60, "re-logins paced")
            relogins = operator.log_text().count(RELOGIN)
            assert 4 <= relogins <= 8, relogins
            assert not has_config_map(cluster, ns, "during")

            renew(issue_token())
            cluster.wait_until(lambda: has_config_map(cluster, ns, "during"), 60, "the write refused earlier done")
            cluster.wait_until(operator.healthy, 30, "/healthz passing again")
            make_policy(cluster, ns, "after")
            cluster.wait_until(lambda: has_config_map(cluster, ns, "after"), 30, "a new policy reconciled")
            assert operator.process is not None and operator.process.poll() is None, "no restart was needed"
            log = operator.log_text()
            assert "read them again and retrying with the renewed ones" in log, log[-3000:]
    finally:
        for kind in ("clusterrolebindings", "clusterroles"):
            cluster.api("DELETE", f"/apis/rbac.authorization.k8s.io/v1/{kind}/{account}")
