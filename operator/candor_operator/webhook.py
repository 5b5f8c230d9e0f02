"""The injection webhook's endpoint and the RBAC the operator needs (the Helm chart follows this file).

Endpoint
    HTTPS on port 9443 (`--webhook-port`), listening on 0.0.0.0 (`--webhook-listen`), path
    `/candor/inject` (kopf serves `<--webhook-path>/<handler id>`; the path prefix is `/candor` and the
    handler id is `inject`). Certificate and key from `--webhook-cert`/`--webhook-key` (in the cluster:
    a TLS Secret mounted by the chart, e.g. at /etc/candor/webhook/tls.crt and tls.key). kopf re-reads the
    files when they change, so a renewed Secret needs no restart.

The MutatingWebhookConfiguration (created by the chart, or by `webhook_configuration()` in tests)
    Pod CREATE only, `failurePolicy: Ignore` (a broken operator must never block pod creation),
    `sideEffects: None` (the handler only reads), `reinvocationPolicy: Never`, `timeoutSeconds: 5`,
    `matchPolicy: Equivalent`, and a namespaceSelector excluding the system namespaces.

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
    `RBAC_RULES` below is the ClusterRole, complete and minimal: the chart's ClusterRole must match it
    (tests/integration/test_operator_reconcile.py runs the operator as a ServiceAccount bound to exactly it).
"""

from __future__ import annotations

from typing import Any

import kopf

from candor_operator.admission_server import AdmissionServer
from candor_operator.injection import SYSTEM_NAMESPACES
from candor_operator.settings import WebhookSettings

HANDLER_ID = "inject"
DEFAULT_PORT = 9443
DEFAULT_PATH = "/candor"
WEBHOOK_NAME = "inject.candor.io"
CONFIGURATION_NAME = "candor-injector"
TIMEOUT_SECONDS = 5

RBAC_RULES: list[dict[str, Any]] = [
    # HealthPolicies: watch, the finalizer and kopf's bookkeeping annotations, status.
    {"apiGroups": ["candor.io"], "resources": ["healthpolicies"],
     "verbs": ["get", "list", "watch", "patch", "update", "delete"]},
    {"apiGroups": ["candor.io"], "resources": ["healthpolicies/status"], "verbs": ["get", "patch", "update"]},
    # Services: read selectors, write only the annotations Candor owns.
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "patch"]},
    # The sidecar-config ConfigMap of each policy.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]},
    # Counting governed pods for status.pods.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    # Deployments asking for injection (index) and rollout restarts (template annotation patch).
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
    # Events on HealthPolicies.
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # kopf: resource discovery and peering between replicas.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
     "verbs": ["list", "watch", "patch", "get", "create"]},
]
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


def url(base: str, path: str = DEFAULT_PATH) -> str:
    """The full URL the API server calls, e.g. url("https://127.0.0.1:9443") → .../candor/inject."""
    return f"{base.rstrip('/')}/{path.strip('/')}/{HANDLER_ID}"


def webhook_configuration(
    client_config: dict[str, Any], name: str = CONFIGURATION_NAME, excluded_namespaces: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for the injector; `client_config` holds url or service, and caBundle."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "candor"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
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
            }
        ],
    }
