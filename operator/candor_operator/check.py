"""`candor check`: what is wrong with Candor in a cluster, in plain words (and JSON for scripts).

Checks, in order: the HealthPolicy CRD (installed, served, the schema this release ships); the operator
(a live, active replica in kopf's peering object, its Deployment's readiness); the injection webhook
(configured, its Service backed by a ready endpoint, and answering: a server-side dry-run of a pod a
policy governs must come back with the sidecar); then each HealthPolicy: applied (Ready, for the current
generation), its Services annotated, its pods injected (each one that is not, and why), sidecars of
another release, and agents answering down, drain or maint (read from each sidecar's /health through the
API server's pod proxy).

`CHECK_RBAC_RULES` is what the command reads; the README's RBAC for it follows this list.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from candor_operator.api_names import API_VERSION, CRD_NAME, GROUP, INJECT_ANNOTATION, PLURAL
from candor_operator.check_cluster import Cluster, ClusterError
from candor_operator.check_pods import agent_answer, why_not_injected
from candor_operator.claims import targets
from candor_operator.crd import build_crd
from candor_operator.labels import selector_to_query
from candor_operator.ownership import record_of
from candor_operator.peering import peer_alive, replica_is_active
from candor_operator.pod_census import sidecar_version
from candor_operator.services import slim_service
from candor_operator.summary import PolicySummary, summarize
from candor_operator.webhook import WEBHOOK_NAME
from candor_sidecar.release import VERSION

OK, WARN, FAIL = "ok", "warn", "fail"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
OPERATOR_SELECTOR = "app.kubernetes.io/name=candor,app.kubernetes.io/component=operator"

CHECK_RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get"]},
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get"]},
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
     "verbs": ["list"]},
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["list"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["list"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
    # The webhook test: a server-side dry run of a pod (nothing is stored).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
    # The sidecars' /health, through the API server.
    {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
]


@dataclass
class Finding:
    area: str  # crd, operator, webhook, policy
    subject: str
    level: str  # ok, warn, fail
    message: str
    details: list[str] = field(default_factory=list)


@dataclass
class Report:
    server: str
    findings: list[Finding]

    @property
    def failed(self) -> bool:
        return any(f.level == FAIL for f in self.findings)

    def as_json(self) -> str:
        return json.dumps({"server": self.server, "ok": not self.failed, "candorVersion": VERSION,
                           "findings": [asdict(f) for f in self.findings]}, indent=2)

    def as_text(self) -> str:
        marks = {OK: "[ok]  ", WARN: "[warn]", FAIL: "[FAIL]"}
        lines = [f"candor check {VERSION} against {self.server}"]
        for finding in self.findings:
            lines.append(f"{marks[finding.level]} {finding.area} {finding.subject}: {finding.message}")
            lines.extend(f"         - {detail}" for detail in finding.details)
        failed = sum(f.level == FAIL for f in self.findings)
        warned = sum(f.level == WARN for f in self.findings)
        lines.append(f"{failed} problem(s), {warned} warning(s)" if failed or warned else "everything is in order")
        return "\n".join(lines) + "\n"


def _paths(schema: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Every property path of an OpenAPI schema (what a field added or removed between releases changes)."""
    found: set[str] = set()
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else str(name)
        found.add(path)
        if isinstance(sub, Mapping):
            found |= _paths(sub, path)
            items = sub.get("items")
            if isinstance(items, Mapping):
                found |= _paths(items, path + "[]")
    return found


def _schema(crd: Mapping[str, Any], version: str) -> Mapping[str, Any]:
    for served in (crd.get("spec") or {}).get("versions") or []:
        if served.get("name") == version:
            return dict((served.get("schema") or {}).get("openAPIV3Schema") or {})
    return {}


def check_crd(cluster: Cluster) -> list[Finding]:
    installed = cluster.get(CRD_PATH)
    if installed is None:
        return [Finding("crd", CRD_NAME, FAIL, "the HealthPolicy CRD is not installed (helm install candor "
                                               "helm/candor, or kubectl apply -f crds/healthpolicy.yaml)")]
    wanted = build_crd()
    version = wanted["spec"]["versions"][0]["name"]
    served = [v["name"] for v in installed["spec"].get("versions") or [] if v.get("served")]
    if version not in served:
        return [Finding("crd", CRD_NAME, FAIL, f"installed, but {version} is not served (served: "
                                               f"{', '.join(served) or 'none'}): upgrade the chart")]
    established = any(c.get("type") == "Established" and c.get("status") == "True"
                      for c in (installed.get("status") or {}).get("conditions") or [])
    if not established:
        return [Finding("crd", CRD_NAME, FAIL, "installed but not Established yet: the API server refuses it")]
    have, want = _paths(_schema(installed, version)), _paths(_schema(wanted, version))
    if have != want:
        details = [f"fields candor {VERSION} has that the cluster's CRD lacks: {', '.join(sorted(want - have))}"
                   ] if want - have else []
        if have - want:
            details.append(f"fields of the cluster's CRD unknown to candor {VERSION}: {', '.join(sorted(have - want))}")
        return [Finding("crd", CRD_NAME, WARN, f"{version} served, but its schema is not the one candor {VERSION} "
                                               "ships: `helm upgrade` to this release (or use the matching candor)",
                        details)]
    return [Finding("crd", CRD_NAME, OK, f"{version} served; schema as candor {VERSION} ships it")]


def _ready(deployment: Mapping[str, Any]) -> tuple[int, int]:
    status = deployment.get("status") or {}
    return int(status.get("readyReplicas") or 0), int((deployment.get("spec") or {}).get("replicas") or 0)


def check_operator(cluster: Cluster, peering: str) -> list[Finding]:
    try:
        deployments = cluster.items("/apis/apps/v1/deployments", {"labelSelector": OPERATOR_SELECTOR})
    except ClusterError as error:
        deployments, note = [], f"cannot list Deployments: {error.message}"
    else:
        note = ""
    described = [f"Deployment {d['metadata']['namespace']}/{d['metadata']['name']}: {'/'.join(map(str, _ready(d)))} "
                 "ready" for d in deployments]
    ready = sum(_ready(d)[0] for d in deployments)
    try:
        body = cluster.get(f"/apis/kopf.dev/v1/clusterkopfpeerings/{peering}")
    except ClusterError as error:
        body = None
        note = note or f"cannot read the peering object {peering}: {error.message}"
    details = [*described, *([note] if note else [])]
    if body is not None:
        peers = {str(k): v for k, v in (body.get("status") or {}).items() if isinstance(v, Mapping)}
        now = datetime.datetime.now(datetime.UTC)
        live = {name: entry for name, entry in peers.items() if peer_alive(entry, now)}
        active = [name for name, entry in live.items()
                  if replica_is_active(live, name, int(entry.get("priority", 0)))]
        if active:
            return [Finding("operator", peering, OK, f"active replica: {', '.join(active)} ({len(live)} live in "
                                                      f"ClusterKopfPeering {peering})", details)]
        if live:
            return [Finding("operator", peering, FAIL, f"{len(live)} replicas run but kopf peering pauses them all "
                                                        "(equal --priority?): no policy is reconciled", details)]
        return [Finding("operator", peering, FAIL, "no operator replica is running (none alive in "
                                                    f"ClusterKopfPeering {peering}): policies are not applied",
                        details)]
    if ready:
        return [Finding("operator", peering, OK, f"{ready} replica(s) ready (no peering object: standalone)",
                        details)]
    if deployments:
        return [Finding("operator", peering, FAIL, "the operator's Deployment has no ready replica", details)]
    return [Finding("operator", peering, FAIL, "no Candor operator found (no ClusterKopfPeering "
                                                f"{peering}, no Deployment labelled {OPERATOR_SELECTOR})", details)]


def _webhooks(cluster: Cluster) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(configuration, webhook) of every Candor injection webhook."""
    found: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for configuration in cluster.items("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"):
        for hook in configuration.get("webhooks") or []:
            if hook.get("name") == WEBHOOK_NAME:
                found.append((configuration, hook))
    return found


def _service_endpoint(cluster: Cluster, service: Mapping[str, Any]) -> str | None:
    """Why the webhook's Service cannot be reached, or None when it has a ready endpoint."""
    namespace, name = service.get("namespace"), service.get("name")
    slices = cluster.items(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                           {"labelSelector": f"kubernetes.io/service-name={name}"})
    ready = [e for s in slices for e in s.get("endpoints") or []
             if (e.get("conditions") or {}).get("ready") is not False]
    return None if ready else f"Service {namespace}/{name} has no ready endpoint (is the operator pod ready?)"


def _probe_pod(policy: PolicySummary) -> dict[str, Any]:
    labels = dict(policy.spec.get("selector", {}).get("matchLabels") or {})
    for expression in policy.spec.get("selector", {}).get("matchExpressions") or []:
        if expression.get("operator") in ("In", "Exists"):
            labels.setdefault(expression["key"], (expression.get("values") or ["candor-check"])[0])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"candor-check-{uuid.uuid4().hex[:8]}", "labels": labels,
                         "annotations": {INJECT_ANNOTATION: "true"}},
            # Compliant with the restricted Pod Security Standard, so a restricted namespace does not refuse it.
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "app", "image": "candor-check.invalid/dry-run:0",
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


def check_webhook(cluster: Cluster, policies: list[PolicySummary]) -> tuple[list[Finding], str | None]:
    """The findings, and when the webhook was configured (None when it is not)."""
    hooks = _webhooks(cluster)
    if not hooks:
        return [Finding("webhook", WEBHOOK_NAME, FAIL, "no injection webhook is configured: new pods get no "
                                                        "sidecar (install the chart with webhook.enabled=true)")], None
    created = min(str(c["metadata"].get("creationTimestamp") or "") for c, _ in hooks)
    details = []
    for configuration, hook in hooks:
        client_config = hook.get("clientConfig") or {}
        service = client_config.get("service")
        where = (f"Service {service.get('namespace')}/{service.get('name')}" if service
                 else f"URL {client_config.get('url')}")
        details.append(f"MutatingWebhookConfiguration {configuration['metadata']['name']} calls {where}, "
                       f"failurePolicy {hook.get('failurePolicy')}")
        if service:
            problem = _service_endpoint(cluster, service)
            if problem:
                return [Finding("webhook", WEBHOOK_NAME, FAIL, problem, details)], created
    candidates = [p for p in policies if p.valid and not p.deleting]
    if not candidates:
        return [Finding("webhook", WEBHOOK_NAME, OK, "configured (not tested: no valid HealthPolicy to test with)",
                        details)], created
    policy = candidates[0]
    status, answer = cluster.request("POST", f"/api/v1/namespaces/{policy.namespace}/pods", {"dryRun": "All"},
                                     _probe_pod(policy))
    if status == 403:
        return [Finding("webhook", WEBHOOK_NAME, WARN, f"configured; not tested: a test pod (dry run) in "
                                                        f"{policy.namespace} was refused: {_text(answer)}",
                        details)], created
    if status >= 400 or not isinstance(answer, dict):
        return [Finding("webhook", WEBHOOK_NAME, FAIL, f"a test pod (dry run) in {policy.namespace} was refused: "
                                                        f"HTTP {status}: {_text(answer)}", details)], created
    if sidecar_version(answer) is None:
        return [Finding("webhook", WEBHOOK_NAME, FAIL,
                        f"not answering: a test pod (dry run) that HealthPolicy {policy.namespace}/{policy.name} "
                        "governs came back without the sidecar (the API server could not call the webhook, and "
                        "failurePolicy Ignore let the pod through)", details)], created
    return [Finding("webhook", WEBHOOK_NAME, OK, f"answering: a test pod (dry run) in {policy.namespace} came back "
                                                  "with the sidecar", details)], created


def _text(answer: Any) -> str:
    return str(answer.get("message") if isinstance(answer, dict) else answer)[:300]


Health = Callable[[str, str, int], tuple[int, str]]  # (namespace, pod, port) -> (HTTP status, body)


def proxy_health(cluster: Cluster) -> Health:
    def read(namespace: str, pod: str, port: int) -> tuple[int, str]:
        status, body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/health")
        return status, body if isinstance(body, str) else json.dumps(body)
    return read


def check_policy(
    cluster: Cluster, raw: Mapping[str, Any], services: Iterable[Mapping[str, Any]],
    deployments: Mapping[str, Mapping[str, Any]], webhook_created: str | None, health: Health,
) -> list[Finding]:
    policy = summarize(dict(raw))
    subject = f"{policy.namespace}/{policy.name}"
    findings: list[Finding] = []
    status = raw.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    if not policy.valid:
        return [Finding("policy", subject, FAIL, f"invalid: {policy.error_field}: {policy.error_problem}")]
    if not conditions:
        findings.append(Finding("policy", subject, FAIL, "never reconciled: is the operator running and watching "
                                                          f"namespace {policy.namespace}?"))
    elif status.get("observedGeneration") != policy.generation:
        findings.append(Finding("policy", subject, WARN, f"the operator has not applied generation {policy.generation} "
                                                          f"yet (status is of {status.get('observedGeneration')})"))
    elif (conditions.get("Ready") or {}).get("status") != "True":
        ready = conditions.get("Ready") or {}
        findings.append(Finding("policy", subject, FAIL, f"not Ready: {ready.get('reason')}: {ready.get('message')}"))

    targeted, annotated, problems = [], [], []
    for service in services:
        slim = slim_service(service)
        name = str(slim["metadata"]["name"])
        owner = record_of(slim["metadata"]["annotations"]).policy
        if owner == policy.name:
            annotated.append(name)
        if targets(policy.view, slim):
            targeted.append(name)
            if owner != policy.name:
                problems.append(f"Service {name} is targeted but " + (
                    f"annotated for HealthPolicy {owner} (the older policy wins)" if owner else "not annotated"))
    if problems:
        findings.append(Finding("policy", subject, FAIL, "Services not annotated as rendered", problems))
    elif not targeted:
        findings.append(Finding("policy", subject, WARN, "no Service selects its pods: nothing to annotate"))
    else:
        findings.append(Finding("policy", subject, OK,
                                f"Services annotated as rendered: {', '.join(sorted(annotated))}"))

    selector = policy.spec.get("selector") or {}
    pods = cluster.items(f"/api/v1/namespaces/{policy.namespace}/pods",
                         {"labelSelector": selector_to_query(selector)})
    pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    missing, other, agents = [], [], []
    upgrade_hint = (" (the operator restarts its Deployment, one Deployment at a time)" if policy.rollout == "Automatic"
                    else " (rollout: Manual: restart its Deployment to update it)")
    for pod in pods:
        name = str(pod["metadata"]["name"])
        version = sidecar_version(pod)
        if version is None:
            missing.append(f"pod {name}: {why_not_injected(pod, raw, deployments, webhook_created)}")
            continue
        if version != VERSION:
            other.append(f"pod {name}: sidecar of candor {version or '(before 0.1.0: unrecorded)'}; this is {VERSION}"
                         + upgrade_hint)
        if (pod.get("status") or {}).get("phase") != "Running" or policy.target is None:
            continue
        http_status, body = health(policy.namespace, name, policy.target.http_port)
        word, why = agent_answer(http_status, body)
        if word != "up":
            agents.append(f"pod {name}: agent answers {word}: {why}")
    injected = len(pods) - len(missing)
    if missing:
        findings.append(Finding("policy", subject, FAIL, f"{len(missing)} of {len(pods)} governed pods run without "
                                                          "the sidecar", missing))
    else:
        findings.append(Finding("policy", subject, OK, f"{injected} governed pod(s), all with the sidecar"))
    if other:
        findings.append(Finding("policy", subject, WARN, f"{len(other)} sidecars of another candor release", other))
    if agents:
        findings.append(Finding("policy", subject, WARN, f"{len(agents)} pods get no or less traffic", agents))
    return findings


def _guarded(area: str, subject: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """A refused or failed request becomes a finding naming it, and the other checks still run."""
    try:
        return check()
    except ClusterError as error:
        why = "no permission" if error.status == 403 else "request failed"
        return [Finding(area, subject, FAIL, f"cannot check ({why}): {error}")]


def run_checks(cluster: Cluster, namespace: str | None = None, peering: str = "candor",
               health: Health | None = None) -> Report:
    """Every check; raises ClusterError only when the API server cannot be reached or refuses the credentials."""
    status, _ = cluster.request("GET", "/version")
    if status in (401, 0) or status >= 500:
        raise ClusterError(status, "GET", "/version", "the API server refused the credentials" if status == 401
                           else "the API server does not answer")
    findings = _guarded("crd", CRD_NAME, lambda: check_crd(cluster))
    findings += _guarded("operator", peering, lambda: check_operator(cluster, peering))
    where = f"/namespaces/{namespace}" if namespace else ""
    raws: list[dict[str, Any]] = []
    if any(f.area == "crd" and "not installed" not in f.message for f in findings):
        try:
            raws = cluster.items(f"/apis/{API_VERSION}{where}/{PLURAL}")
        except ClusterError as error:
            findings.append(Finding("policy", namespace or "(all namespaces)", FAIL, f"cannot list: {error}"))
    webhook_created: list[str | None] = [None]

    def webhook() -> list[Finding]:
        found, webhook_created[0] = check_webhook(cluster, [summarize(dict(r)) for r in raws])
        return found

    findings += _guarded("webhook", WEBHOOK_NAME, webhook)
    read_health = health or proxy_health(cluster)

    def policy_checks(raw: dict[str, Any]) -> Callable[[], list[Finding]]:
        ns = str(raw["metadata"]["namespace"])
        return lambda: check_policy(
            cluster, raw, cluster.items(f"/api/v1/namespaces/{ns}/services"),
            {str(d["metadata"]["name"]): d for d in cluster.items(f"/apis/apps/v1/namespaces/{ns}/deployments")},
            webhook_created[0], read_health)

    for raw in sorted(raws, key=lambda r: (str(r["metadata"]["namespace"]), str(r["metadata"]["name"]))):
        subject = f"{raw['metadata']['namespace']}/{raw['metadata']['name']}"
        findings += _guarded("policy", subject, policy_checks(raw))
    if any(f.area == "crd" and "not installed" not in f.message for f in findings) and not raws:
        findings.append(Finding("policy", namespace or "(all namespaces)", WARN, "no HealthPolicy found"))
    return Report(cluster.server, findings)
