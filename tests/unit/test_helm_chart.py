"""The Helm chart: `helm lint --strict`, `helm template | kubernetes-validate --strict -`, and what it renders.

Real helm (harness/cluster/helm.py) and the real kubernetes-validate CLI; the chart's ClusterRole is
compared with the operator's own statement of what it touches (candor_operator.webhook.RBAC_RULES).
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from candor_operator import webhook
from candor_operator.injection import SYSTEM_NAMESPACES
from candor_sidecar.release import VERSION
from candor_tracer.pod_contract import DEFAULT_AGENT_PORT, DEFAULT_HTTP_PORT
from harness.cluster.helm import helm_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "candor"
NAMESPACE = "candor-system"
MONITORING = ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PodMonitor",
              "monitoring.coreos.com/v1/PrometheusRule")
# The documented narrow install: served namespaces, both NetworkPolicies.
NARROW = ("--set", "operator.namespaces={shop,blog}", "--set", "networkPolicy.webhook.enabled=true",
          "--set", "networkPolicy.webhook.from[0].ipBlock.cidr=10.0.0.0/24",
          "--set", "networkPolicy.sidecar.enabled=true", "--set", "networkPolicy.sidecar.namespaces={shop,blog}")
KUBERNETES_VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False)


def _template(*args: str) -> str:
    result = _helm("template", "candor", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def _validate(text: str) -> None:
    result = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "-k", "1.33.0", "-"], input=text,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def test_chart_crd_is_byte_identical_to_the_top_level_one() -> None:
    assert (CHART / "files" / "healthpolicy.yaml").read_bytes() == (ROOT / "crds" / "healthpolicy.yaml").read_bytes()


def test_crds_are_release_templates_so_upgrades_reach_them_and_healthpolicies_outlive_the_release() -> None:
    assert not (CHART / "crds").exists()
    crds = {o["metadata"]["name"]: o for o in _objects(_template()) if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"healthpolicies.candor.io", "clusterkopfpeerings.kopf.dev"}
    assert crds["healthpolicies.candor.io"]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_the_operator_is_ready_only_through_its_readiness_endpoint() -> None:
    container = _one(_objects(_template()), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "readiness"}
    assert f"--readiness=http://0.0.0.0:{ports['readiness']}/readyz" in container["args"]


def test_no_service_account_name_with_create_false_is_refused() -> None:
    result = _helm("template", "candor", str(CHART), "--set", "serviceAccount.create=false")
    assert result.returncode != 0
    assert "serviceAccount.name: required with serviceAccount.create=false" in result.stderr
    objects = _objects(_template("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=candor-sa"))
    (binding,) = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"][0]["name"] == "candor-sa"


def test_helm_lint_strict() -> None:
    result = _helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="defaults"),
        pytest.param(("--include-crds", *[f"--api-versions={v}" for v in MONITORING]), id="crds+monitoring"),
        pytest.param(("--set", "webhook.certManager.enabled=true", "--api-versions=cert-manager.io/v1"),
                     id="cert-manager"),
        pytest.param(("--set", "webhook.enabled=false", "--set", "operator.namespaces={shop,blog}"), id="no-webhook"),
        pytest.param(NARROW, id="namespaces+network-policies"),
    ],
)
def test_rendered_chart_validates_strictly(args: tuple[str, ...]) -> None:
    _validate(_template(*args))


def test_monitoring_extras_follow_the_cluster_capabilities() -> None:
    bare = {o["kind"] for o in _objects(_template())}
    assert not {"PodMonitor", "PrometheusRule", "ConfigMap"} & bare
    rich = _objects(_template(*[f"--api-versions={v}" for v in MONITORING]))
    assert {"PodMonitor", "PrometheusRule", "ConfigMap"} <= {o["kind"] for o in rich}
    monitors = {o["metadata"]["name"]: o for o in rich if o["kind"] == "PodMonitor"}
    assert monitors["candor-sidecars"]["spec"]["podMetricsEndpoints"][0]["port"] == "candor-http"
    operator = monitors["candor-operator"]["spec"]
    assert operator["podMetricsEndpoints"][0]["port"] == "metrics"
    assert operator["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ports = {p["name"]: p["containerPort"] for p in _one(rich, "Deployment")["spec"]["template"]["spec"]
             ["containers"][0]["ports"]}
    assert ports["metrics"] == 8082
    rules = _one(rich, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert all("{{ $labels.pod }}" in rule["annotations"]["summary"] for rule in rules)
    dashboard = _one(rich, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert '"uid": "candor-overview"' in dashboard["data"]["candor.json"]


def test_cluster_role_is_exactly_what_the_operator_touches() -> None:
    role = _one(_objects(_template()), "ClusterRole")
    assert role["rules"] == webhook.RBAC_RULES
    assert not [o for o in _objects(_template()) if o["kind"] in ("Role", "RoleBinding")]


def test_served_namespaces_get_roles_and_nothing_namespaced_is_granted_cluster_wide() -> None:
    objects = _objects(_template("--set", "operator.namespaces={shop,blog}"))
    assert _one(objects, "ClusterRole")["rules"] == webhook.CLUSTER_RULES
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"shop", "blog"}
    for namespace, role in roles.items():
        assert role["rules"] == webhook.NAMESPACED_RULES
        assert bindings[namespace]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                  "name": role["metadata"]["name"]}
        assert bindings[namespace]["subjects"] == [{"kind": "ServiceAccount", "name": "candor",
                                                    "namespace": NAMESPACE}]
    # Nor are other namespaces' pods sent to a webhook that may not read there.
    for hook in _one(objects, "MutatingWebhookConfiguration")["webhooks"]:
        served = hook["namespaceSelector"]["matchExpressions"][1]
        assert served == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop", "blog"]}


def test_the_admission_policy_matches_only_the_operators_account() -> None:
    objects = _objects(_template("--set", "serviceAccount.name=ops"))
    policy = _one(objects, "ValidatingAdmissionPolicy")
    user = f"system:serviceaccount:{NAMESPACE}:ops"
    assert policy["spec"]["matchConditions"] == [
        {"name": "candor-operator-only", "expression": f'request.userInfo.username == "{user}"'}]
    binding = _one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert not {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} & {
        o["kind"] for o in _objects(_template("--set", "admissionPolicy.enabled=false"))}


def test_operator_deployment_is_replicated_probed_and_restricted() -> None:
    objects = _objects(_template())
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == _one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "operator" and "--peering=candor" in args
    assert "--webhook-cert=/etc/candor/webhook/tls.crt" in args
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]  # the operator creates it
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and "--liveness=http://0.0.0.0:8080/healthz" in args
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    env = {e["name"]: e.get("value") or e["valueFrom"] for e in container["env"]}
    assert env["CANDOR_SIDECAR_IMAGE"] == f"candor-sidecar:{VERSION}"
    # kopf peers by the pod's name, so `candor check` and the active-replica metric can name the active pod.
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "--metrics=http://0.0.0.0:8082/metrics" in args


def test_webhook_targets_pod_creation_and_never_blocks_it() -> None:
    objects = _objects(_template())
    configuration = _one(objects, "MutatingWebhookConfiguration")
    hook, label = configuration["webhooks"]
    reference_configuration = webhook.webhook_configuration({"url": "https://x"})
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    for chart, ours in zip(configuration["webhooks"], reference_configuration["webhooks"], strict=True):
        assert chart["name"] == ours["name"]
        assert chart["rules"] == ours["rules"]
        # What lets the API server skip Candor for every pod it does not govern: the same CEL as the operator's.
        assert chart["matchConditions"] == ours["matchConditions"]
        assert (chart["failurePolicy"], chart["sideEffects"]) == ("Ignore", "None")
        assert chart["timeoutSeconds"] == webhook.TIMEOUT_SECONDS <= 3
        excluded = chart["namespaceSelector"]["matchExpressions"][0]
        assert excluded["operator"] == "NotIn" and set(SYSTEM_NAMESPACES) | {NAMESPACE} <= set(excluded["values"])
    service = _one(objects, "Service")
    reference = hook["clientConfig"]["service"]
    assert (reference["name"], reference["namespace"]) == (service["metadata"]["name"], NAMESPACE)
    assert webhook.url("https://x", webhook.DEFAULT_PATH).removeprefix("https://x") == reference["path"]
    assert webhook.url("https://x", webhook.DEFAULT_PATH, webhook.LABEL_HANDLER_ID).removeprefix("https://x") == \
        label["clientConfig"]["service"]["path"]
    assert service["spec"]["ports"][0]["port"] == reference["port"]
    container_ports = {p["name"]: p["containerPort"] for p in
                       _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert container_ports["webhook"] == webhook.DEFAULT_PORT


def test_generated_certificate_is_signed_by_the_ca_bundle_for_the_service_name() -> None:
    objects = _objects(_template())
    secret = _one(objects, "Secret")
    hook = _one(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert f"candor-webhook.{NAMESPACE}.svc" in names
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_cert_manager_variant_injects_the_ca_instead() -> None:
    objects = _objects(_template("--set", "webhook.certManager.enabled=true", "--api-versions=cert-manager.io/v1"))
    kinds = {o["kind"] for o in objects}
    assert {"Issuer", "Certificate"} <= kinds and "Secret" not in kinds
    configuration = _one(objects, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/candor-webhook-tls")
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]


def test_cert_manager_without_cert_manager_fails_with_a_clear_message() -> None:
    result = _helm("template", "candor", str(CHART), "--set", "webhook.certManager.enabled=true")
    assert result.returncode != 0 and "needs cert-manager" in result.stderr


def test_webhook_can_be_turned_off() -> None:
    objects = _objects(_template("--set", "webhook.enabled=false"))
    assert not {"MutatingWebhookConfiguration", "Secret"} & {o["kind"] for o in objects}
    assert "--no-webhook" in _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("values", [(), ("--set", "webhook.enabled=false", "--set", "operator.namespaces={shop}")])
def test_the_operator_accepts_the_arguments_the_chart_passes(values: tuple[str, ...], tmp_path: Path) -> None:
    from candor_operator.cli import operator_command

    pod = _one(_objects(_template(*values)), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "operator"
    # The certificate flags name files in the mounted webhook Secret; the operator checks they exist, so
    # here they must lie under a mount of the container, and a real file stands in for each.
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    args = []
    for arg in container["args"][1:]:
        flag, _, value = arg.partition("=")
        if flag in {"--webhook-cert", "--webhook-key"}:
            assert any(value.startswith(mount.rstrip("/") + "/") for mount in mounts), (arg, mounts)
            stand_in = tmp_path / Path(value).name
            stand_in.write_text("pem")
            arg = f"{flag}={stand_in}"
        args.append(arg)
    # click parses (and would refuse unknown options or bad values) without running the operator.
    context = operator_command.make_context("operator", args)
    assert context.params["peering"] == "candor"
    assert context.params["liveness"] == "http://0.0.0.0:8080/healthz"


def test_bad_values_are_refused_naming_the_value() -> None:
    result = _helm("template", "candor", str(CHART), "--set", "webhook.failurePolicy=Sometimes")
    assert result.returncode != 0 and "/webhook/failurePolicy" in result.stderr
    typo = _helm("template", "candor", str(CHART), "--set", "replicas=3")
    assert typo.returncode != 0 and "replicas" in typo.stderr


def test_two_replicas_get_a_disruption_budget_one_does_not() -> None:
    budget = _one(_objects(_template()), "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert "PodDisruptionBudget" not in {o["kind"] for o in _objects(_template("--set", "replicaCount=1"))}


def test_network_policies_are_off_by_default_and_narrow_only_candors_ports() -> None:
    assert "NetworkPolicy" not in {o["kind"] for o in _objects(_template())}
    objects = _objects(_template(
        "--set", "networkPolicy.webhook.enabled=true",
        "--set", "networkPolicy.webhook.from[0].ipBlock.cidr=10.0.0.0/24",
        "--set", "networkPolicy.sidecar.enabled=true", "--set", "networkPolicy.sidecar.namespaces={shop}",
        "--set", "networkPolicy.sidecar.agentFrom[0].namespaceSelector.matchLabels.team=ingress"))
    policies = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    assert set(policies) == {NAMESPACE, "shop"}
    webhook_rules = policies[NAMESPACE]["spec"]["ingress"]
    assert webhook_rules[0] == {"ports": [{"port": webhook.DEFAULT_PORT, "protocol": "TCP"}],
                                "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}
    assert "from" not in webhook_rules[1]  # the kubelet's probes
    sidecar = policies["shop"]["spec"]
    assert sidecar["podSelector"] == {"matchLabels": {"candor.io/inject": "true"}}
    http, agent, others = sidecar["ingress"]
    assert http == {"ports": [{"port": DEFAULT_HTTP_PORT, "protocol": "TCP"}]}  # no httpFrom: from anywhere
    assert agent == {"ports": [{"port": DEFAULT_AGENT_PORT, "protocol": "TCP"}],
                     "from": [{"namespaceSelector": {"matchLabels": {"team": "ingress"}}}]}
    # Every other TCP port stays open to all, so the app's own ports are not cut off by the policy.
    tcp = sorted((p["port"], p["endPort"]) for p in others["ports"] if p["protocol"] == "TCP")
    assert tcp == [(1, DEFAULT_HTTP_PORT - 1), (DEFAULT_HTTP_PORT + 1, DEFAULT_AGENT_PORT - 1),
                   (DEFAULT_AGENT_PORT + 1, 65535)]
    assert "from" not in others
