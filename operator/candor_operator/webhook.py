"""The injection webhook's endpoint and the RBAC the operator needs (the Helm chart follows this file).

Endpoint
    HTTPS on port 9443 (`--webhook-port`), listening on 0.0.0.0 (`--webhook-listen`), path
    `/candor/inject` (kopf serves `<--webhook-path>/<handler id>`; the path prefix is `/candor` and the
    handler id is `inject`). Certificate and key from `--webhook-cert`/`--webhook-key` (in the cluster:
    a TLS Secret mounted by the chart, e.g. at /etc/candor/webhook/tls.crt and tls.key). kopf re-reads the
    files when they change, so a renewed Secret needs no restart.

The MutatingWebhookConfiguration (created by the chart, or by `webhook_configuration()` in tests)
    Two webhooks, both `failurePolicy: Ignore` (a broken operator must never block pod creation),
    `sideEffects: None` (the handlers only read), `reinvocationPolicy: Never`, `timeoutSeconds: 3`,
    `matchPolicy: Equivalent`, a namespaceSelector excluding the system namespaces, and matchConditions
    (governed.py) so that only what Candor governs is sent: `inject.candor.io` on Pod CREATE for pods
    labelled or annotated `candor.io/inject: "true"`, and `label.candor.io` (path `/candor/label`) on
    Deployment CREATE/UPDATE for annotated Deployments, which puts that label in their pod template
    when the template changes anyway.

What an injected pod carries
    annotations `candor.io/status: injected` (never injected twice), `candor.io/policy: <HealthPolicy>`,
    `candor.io/config-hash` (what the sidecar runs; rollout Automatic compares it); the sidecar as
    `initContainers[0]` with `restartPolicy: Always`; volumes `candor-state` (emptyDir at /var/run/candor,
    also mounted in every app container with CANDOR_STATE_DIR), `candor-podinfo` (downwardAPI labels and
    annotations at /etc/podinfo) and `candor-config` (ConfigMap `candor-sidecar-<policy>`, key sidecar.yaml,
    at /etc/candor), `candor-control` (in-memory emptyDir at /run/candor-control, the sidecar's control socket,
    mounted in the sidecar only). The sidecar image comes from `--sidecar-image` / CANDOR_SIDECAR_IMAGE and is
    started as `candor sidecar --config /etc/candor/sidecar.yaml ...` as uid 10001. With the policy's drain
    enabled: the sidecar's preStop hook `exec: candor sidecar drain`, each app container's preStop hook
    `httpGet /drain/wait` on the sidecar's HTTP port (an app's own preStop sleep composed as `?atLeast=N`, any
    other own hook kept and named in the admission warnings), and drain.maxWait added to the grace period.
    The app's serving ports (the target ports of the policy's Services selecting the pod) as `--app-port`
    flags, `POD_IP` from the downward API, and a readinessProbe `GET /health/app` on the sidecar that
    fails until the app accepts connections on them; app containers without a readinessProbe are named in
    the admission warnings.

Liveness
    `--liveness http://0.0.0.0:8080/healthz` serves kopf's health endpoint (200 once the operator runs).

RBAC
    `RBAC_RULES` below, complete and minimal: `NAMESPACED_RULES` (a Role in each served namespace, or the
    ClusterRole when cluster-wide) and `CLUSTER_RULES` (always the ClusterRole). The chart must match them
    (tests/integration/test_operator_reconcile.py runs the operator as a ServiceAccount bound to exactly them).
"""

from __future__ import annotations

from typing import Any

import kopf

from candor_operator.admission_server import AdmissionServer
from candor_operator.api_names import GROUP, PLURAL
from candor_operator.governed import DEPLOYMENT_MATCH_CONDITIONS, POD_MATCH_CONDITIONS
from candor_operator.injection import SYSTEM_NAMESPACES
from candor_operator.settings import WebhookSettings

HANDLER_ID = "inject"
LABEL_HANDLER_ID = "label"
DEFAULT_PORT = 9443
DEFAULT_PATH = "/candor"
WEBHOOK_NAME = "inject.candor.io"
LABEL_WEBHOOK_NAME = "label.candor.io"
CONFIGURATION_NAME = "candor-injector"
# The API server waits this long for an answer before admitting the object as it is (failurePolicy Ignore);
# only governed pods wait at all (matchConditions), and a healthy answer takes milliseconds.
TIMEOUT_SECONDS = 3

# What the operator does in each namespace it serves: with `operator.namespaces` set, the chart grants these
# in a Role per namespace; cluster-wide, in its ClusterRole. (The chart's ValidatingAdmissionPolicy narrows the
# writes further: only Candor's annotations and labels, only candor-sidecar-* ConfigMaps.)
NAMESPACED_RULES: list[dict[str, Any]] = [
    # HealthPolicies: watch, the finalizer and kopf's bookkeeping annotations, status.
    {"apiGroups": [GROUP], "resources": [PLURAL],
     "verbs": ["get", "list", "watch", "patch", "update", "delete"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch", "update"]},
    # Services: read selectors, write only the annotations Candor owns.
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "patch"]},
    # The sidecar-config ConfigMap of each policy.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]},
    # Counting governed pods and finding pods that missed the webhook, as metadata only (kube.list_metadata):
    # RBAC cannot tell a metadata list from a full one. The one full list and watch is of governed pods only
    # (label candor.io/inject=true): their sidecar's termination message, for the Drained Event. No get.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    # Deployments asking for injection (index) and rollout restarts (template annotation patch).
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
    # Events on HealthPolicies, on the Services and Deployments Candor changes, and on drained pods.
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
# Always cluster-wide: cluster-scoped kinds only, read-only but for kopf's one peering object.
CLUSTER_RULES: list[dict[str, Any]] = [
    # kopf: resource discovery and peering between replicas.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
     "verbs": ["list", "watch", "patch", "get", "create"]},
]
RBAC_RULES: list[dict[str, Any]] = [*NAMESPACED_RULES, *CLUSTER_RULES]
# Only with `--webhook-managed NAME` (kopf keeps the configuration itself; the chart does not need it):
MANAGED_WEBHOOK_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations"],
        "verbs": ["create", "patch"],
    },
]


def server(settings: WebhookSettings) -> kopf.WebhookServer:
    if not (settings.cert_file and settings.key_file):
        raise ValueError("--webhook-cert and --webhook-key are required unless --no-webhook is given")
    return AdmissionServer(
        addr=settings.listen,
        port=settings.port,
        path=settings.path,
        host=settings.host,
        certfile=settings.cert_file,
        pkeyfile=settings.key_file,
        cafile=settings.ca_file,
    )


def url(base: str, path: str = DEFAULT_PATH, handler: str = HANDLER_ID) -> str:
    """The full URL the API server calls, e.g. url("https://127.0.0.1:9443") → .../candor/inject."""
    return f"{base.rstrip('/')}/{path.strip('/')}/{handler}"


def _webhook(name: str, client_config: dict[str, Any], rule: dict[str, Any], conditions: list[dict[str, str]],
             excluded_namespaces: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": client_config,
        "rules": [rule],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "Never",
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": sorted({*SYSTEM_NAMESPACES, *excluded_namespaces}),
                }
            ]
        },
        "matchConditions": [dict(condition) for condition in conditions],
    }


def webhook_configuration(
    client_config: dict[str, Any], name: str = CONFIGURATION_NAME, excluded_namespaces: tuple[str, ...] = (),
    label_client_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for the injector; `client_config` holds url or service, and caBundle
    (for the pod webhook; `label_client_config` for the Deployment one, by default the same with its path)."""
    if label_client_config is None:
        label_client_config = dict(client_config)
        if "url" in label_client_config:
            label_client_config["url"] = str(label_client_config["url"]).rsplit("/", 1)[0] + f"/{LABEL_HANDLER_ID}"
        if "service" in label_client_config:
            service = dict(label_client_config["service"])
            service["path"] = str(service.get("path", f"{DEFAULT_PATH}/{HANDLER_ID}")).rsplit("/", 1)[0] \
                + f"/{LABEL_HANDLER_ID}"
            label_client_config["service"] = service
    pods = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
            "scope": "Namespaced"}
    deployments = {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["deployments"], "scope": "Namespaced"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "candor"}},
        "webhooks": [
            _webhook(WEBHOOK_NAME, client_config, pods, POD_MATCH_CONDITIONS, excluded_namespaces),
            _webhook(LABEL_WEBHOOK_NAME, label_client_config, deployments, DEPLOYMENT_MATCH_CONDITIONS,
                     excluded_namespaces),
        ],
    }
