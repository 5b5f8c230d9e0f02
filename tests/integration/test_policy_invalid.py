"""Every kind of invalid HealthPolicy, one test each, against the real API server and the real operator.

Each is either refused by the API server with the field named in the 422's causes, or stored and
then marked `Invalid` by the operator naming the field, with nothing written: no ConfigMap and the
Service's annotations untouched. Both CRDs are tried: the packaged one (schema and CEL rules), and
the same CRD without its spec schema (installed by hand, or an older chart), where the operator's
own checks are all that stands between a typo and the Services.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from harness.cluster.control_plane import ROOT, K8sCluster
from harness.processes.operator_process import OperatorProcess
from tests.cases.policy_cases import INVALID_POLICIES, valid_spec

pytestmark = pytest.mark.integration

POLICIES = "/apis/candor.io/v1alpha1/namespaces/{ns}/healthpolicies"
USER_ANNOTATIONS = {"team": "payments", "haproxy.org/timeout-server": "50s"}
PACKAGED, NO_SCHEMA = "packaged CRD", "CRD without schema"


@dataclass
class Setup:
    mode: str
    ns: str
    operator: OperatorProcess
    outcomes: dict[str, str] = field(default_factory=dict)  # case -> who refused it


def relaxed_crd() -> dict[str, Any]:
    """The HealthPolicy CRD with its spec schema switched off, so only the operator's own checks remain."""
    crd = yaml.safe_load((ROOT / "crds" / "healthpolicy.yaml").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return dict(crd)


def post(cluster: K8sCluster, ns: str, name: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = cluster.api("POST", POLICIES.format(ns=ns), {
        "apiVersion": "candor.io/v1alpha1", "kind": "HealthPolicy", "metadata": {"name": name}, "spec": spec})
    return response.status, response.body


def condition(cluster: K8sCluster, ns: str, name: str, kind: str) -> dict[str, Any] | None:
    status = cluster.api("GET", f"{POLICIES.format(ns=ns)}/{name}").ok().get("status") or {}
    return next((dict(c) for c in status.get("conditions") or [] if c["type"] == kind), None)


def service_annotations(cluster: K8sCluster, ns: str, name: str) -> dict[str, str]:
    return dict(cluster.api("GET", f"/api/v1/namespaces/{ns}/services/{name}").ok()["metadata"].get("annotations")
                or {})


def delete_policy(cluster: K8sCluster, ns: str, name: str) -> None:
    cluster.api("DELETE", f"{POLICIES.format(ns=ns)}/{name}")
    cluster.wait_until(lambda: cluster.api("GET", f"{POLICIES.format(ns=ns)}/{name}").status == 404, 30,
                       f"{name} deleted")


@pytest.fixture(scope="module", params=[PACKAGED, NO_SCHEMA])
def setup(request: pytest.FixtureRequest, k8s_cluster: K8sCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    cluster, mode = k8s_cluster, str(request.param)
    ns = cluster.create_namespace()
    try:
        if mode == NO_SCHEMA:
            cluster.apply(relaxed_crd())
            # The API server switches schemas asynchronously: wait until it stores what only the relaxed one allows.
            cluster.wait_until(lambda: post(cluster, ns, "relaxed-probe", {"selector": {}, "x": 1})[0] == 201, 30,
                               "the CRD without schema in effect")
            delete_policy(cluster, ns, "relaxed-probe")
        else:
            cluster.install_crds(ROOT / "crds" / "healthpolicy.yaml")
        cluster.api("POST", f"/api/v1/namespaces/{ns}/services", {
            "metadata": {"name": "web", "annotations": USER_ANNOTATIONS},
            "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]}}).ok()
        with OperatorProcess(cluster, tmp_path_factory.mktemp("operator"), namespaces=[ns], webhook=False) as operator:
            result = Setup(mode, ns, operator)
            yield result
        refused = sum(1 for who in result.outcomes.values() if who == "API server")
        print(f"\n{mode}: {len(result.outcomes)} invalid kinds, {refused} refused by the API server, "
              f"{len(result.outcomes) - refused} marked Invalid by the operator")
    finally:
        cluster.api("DELETE", f"/api/v1/namespaces/{ns}")
        if mode == NO_SCHEMA:
            cluster.apply(yaml.safe_load((ROOT / "crds" / "healthpolicy.yaml").read_text()))
            cluster.install_crds()


@pytest.mark.parametrize(
    ("index", "case", "spec", "field_name"),
    [pytest.param(index, case, spec, field_name, id=case)
     for index, (case, spec, field_name) in enumerate(INVALID_POLICIES)],
)
def test_an_invalid_policy_is_refused_naming_the_field_or_marked_invalid_with_nothing_written(
    setup: Setup, k8s_cluster: K8sCluster, index: int, case: str, spec: dict[str, Any], field_name: str,
) -> None:
    cluster, ns, name = k8s_cluster, setup.ns, f"bad-{index}"
    status, body = post(cluster, ns, name, spec)
    if status == 422:
        causes = {cause.get("field", "") for cause in body.get("details", {}).get("causes", [])}
        assert field_name in causes, (sorted(causes), body.get("message"))
        assert cluster.api("GET", f"{POLICIES.format(ns=ns)}/{name}").status == 404
        setup.outcomes[case] = "API server"
        return
    assert status == 201, body
    try:
        invalid = cluster.wait_until(
            lambda: (c := condition(cluster, ns, name, "Invalid")) and c["status"] == "True" and c, 30,
            "the Invalid condition")
        assert field_name in invalid["message"], invalid["message"]
        ready = condition(cluster, ns, name, "Ready")
        assert ready is not None and ready["status"] == "False"
        assert cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps/candor-sidecar-{name}").status == 404
        assert service_annotations(cluster, ns, "web") == USER_ANNOTATIONS
        setup.outcomes[case] = "operator"
    finally:
        delete_policy(cluster, ns, name)


@pytest.mark.parametrize("setup", [NO_SCHEMA], indirect=True)  # the packaged CRD refuses the edit itself
def test_a_working_policy_edited_into_an_invalid_one_keeps_what_it_wrote(setup: Setup, k8s_cluster: K8sCluster) -> None:
    """A typo must not strip the health checks from a live Service: marked Invalid, the annotations stay."""
    cluster, ns = k8s_cluster, setup.ns
    cluster.api("POST", f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": "kept"}, "spec": {"selector": {"app": "kept"}, "ports": [{"port": 80}]}}).ok()
    status, body = post(cluster, ns, "turns-bad", valid_spec(selector={"matchLabels": {"app": "kept"}}, maxConn=5))
    assert status == 201, body
    before = cluster.wait_until(lambda: (a := service_annotations(cluster, ns, "kept")).get("haproxy.org/check") and a,
                                30, "kept annotated")
    cluster.api("PATCH", f"{POLICIES.format(ns=ns)}/turns-bad", {"spec": {"memory": {"maxPercent": 150}}},
                content_type="application/merge-patch+json").ok()
    cluster.wait_until(lambda: (c := condition(cluster, ns, "turns-bad", "Invalid")) and c["status"] == "True", 30,
                       "Invalid after the edit")
    assert service_annotations(cluster, ns, "kept") == before
    delete_policy(cluster, ns, "turns-bad")
