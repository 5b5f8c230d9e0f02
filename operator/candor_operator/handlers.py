"""kopf registrations: the policy index, HealthPolicy reconcile/delete, the pod webhook; and the Service,
Deployment and governed-pod caches with their event handlers.

The handlers are thin: they pick the namespace's slice of each index and call the pure decision
modules and the idempotent writers. Indices keep small summaries, not whole objects, so holding
thousands of policies and Services stays cheap.

Policy handlers store kopf's bookkeeping in `candor.io/...` annotations on the policy (not in
status, which the CRD schema prunes). kopf watches HealthPolicies only: Services and Deployments, of which a
cluster holds thousands more than Candor governs, are followed by candor_operator.informer (why: there), whose
handlers keep no state on those objects, so Candor writes nothing to them but the annotations it owns.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from candor_operator import drain_events, metrics, object_events, readiness, rollout, webhook
from candor_operator.api_names import CRD_VERSION, FINALIZER, GROUP, PLURAL
from candor_operator.claims import Decision
from candor_operator.credentials import LoginPacer, connection_info
from candor_operator.informer import Informer
from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.metrics_server import MetricsServer, ReplicaWatch
from candor_operator.operator_indices import DEPLOYMENTS, POLICIES, SERVICES, namespace_slice, plain
from candor_operator.ownership import record_of
from candor_operator.peering import own_identity
from candor_operator.pod_admission import PodAdmission
from candor_operator.ready_window import ensure_min_ready
from candor_operator.reconcile import reconcile_policy, release_policy
from candor_operator.services import reconcile_service, slim_service
from candor_operator.settings import OperatorSettings
from candor_operator.sidecar_upgrade import UpgradeQueue
from candor_operator.summary import PolicySummary, summarize
from candor_sidecar.release import VERSION

logger = logging.getLogger("candor.operator")

# kopf's own client opens connections without limit: 500 new policies at once meant hundreds of TLS
# connections and ~200 MB in one burst. Its long-lived watch streams hold connections too, hence the base.
# (settings.queueing.worker_limit is no alternative: with indices it deadlocks the initial indexing.)
KOPF_CONNECTIONS = 48
RETRY_BACKOFF = 5.0  # seconds before kopf retries a failed reconcile (its default of 60 s is long for a 409 storm)
STANDBY_CACHE_SECONDS = 5.0  # how long the Service and Deployment handlers trust one look at kopf's peering


class CandorOperator:
    """Holds the settings and the API client shared by all handlers of one operator process."""

    def __init__(self, settings: OperatorSettings, kubeconfig: str | None = None) -> None:
        self.settings = settings
        self.kubeconfig = kubeconfig
        self._client: KubeClient | None = None
        self.login_pacer = LoginPacer()
        self.heals = rollout.HealPacer()
        self.upgrades = UpgradeQueue()
        self.admission = PodAdmission(settings, lambda: self.client)
        self.metrics_server: MetricsServer | None = None
        self.logged_in = False
        self.watches = readiness.WatchAnswers()
        self.kopf_priority: int | None = None
        self._standby: tuple[float, bool] | None = None  # (when looked, standing by)
        self.services = Informer("services", lambda: self.client, lambda ns: path_for("v1", "services", ns),
                                 settings.namespaces, slim_service, self.service_event, self.watches.answered.add)
        self.deployments = Informer("deployments", lambda: self.client,
                                    lambda ns: path_for("apps/v1", "deployments", ns), settings.namespaces,
                                    rollout.slim_deployment, self.deployment_event, self.watches.answered.add)
        # What the Service and Deployment handlers decide from: complete once listed, unlike kopf's policy index,
        # which the policy handlers read (kopf fills it at its own pace and tells no one outside its handlers).
        self.policies = Informer("healthpolicies", lambda: self.client,
                                 lambda ns: path_for(f"{GROUP}/{CRD_VERSION}", PLURAL, ns), settings.namespaces,
                                 lambda body: summarize(plain(body)))
        # Governed pods only (the API server selects them by label): each one's Drained Event once its sidecar
        # has exited (candor_operator.drain_events).
        self.drains = drain_events.DrainEvents(lambda: self.client, self._standing_by_lately)
        self.pods = Informer("pods", lambda: self.client, lambda ns: path_for("v1", "pods", ns), settings.namespaces,
                             drain_events.slim_pod, self.drains.pod_event, label_selector=drain_events.GOVERNED_PODS)
        checks: dict[str, readiness.Check] = {"watches": self.watches_problem}
        if settings.webhook.enabled:
            checks["webhook"] = self.webhook_problem
        self.readiness = readiness.Readiness(checks)

    async def webhook_problem(self) -> str | None:
        hook = self.settings.webhook
        url = readiness.self_url(hook.listen, hook.port, hook.path, webhook.HANDLER_ID)
        return await readiness.webhook_answers(url)

    async def watches_problem(self) -> str | None:
        """None once kopf's watch streams of every kind Candor handles have been answered (or this replica stands
        by, paused by peering) and the API server still lets Candor list HealthPolicies, as each watch does."""
        if not self.logged_in:
            return "not logged in to the API server yet"
        namespace = self.settings.namespaces[0] if self.settings.namespaces else None
        try:
            await self.client.request("GET", path_for(f"{GROUP}/{CRD_VERSION}", PLURAL, namespace),
                                      params={"limit": "1"}, timeout=readiness.CHECK_TIMEOUT)
        except ApiError as error:
            return f"listing HealthPolicies: HTTP {error.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return f"the API server is unreachable: {type(error).__name__}"
        missing = sorted(readiness.WATCHED - self.watches.answered)
        if not missing or await self._standing_by():
            return None
        return f"kopf's watches not answered yet: {', '.join(missing)}"

    async def _standing_by(self) -> bool:
        """Paused by kopf's peering in favour of a live replica of higher priority: such a replica does not
        watch (kopf pauses it), yet is ready, since its webhook answers from API lookups (and a rolling update
        of the operator would otherwise wait for it forever)."""
        if self.settings.standalone or not self.settings.peering or self.kopf_priority is None:
            return False
        try:
            peering = await self.client.get(path_for("kopf.dev/v1", "clusterkopfpeerings", None, self.settings.peering),
                                            timeout=readiness.CHECK_TIMEOUT)
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError):
            return False
        return readiness.outranked(peering.get("status") or {}, self.kopf_priority)

    @property
    def client(self) -> KubeClient:
        if self._client is None:
            self._client = KubeClient(lambda: connection_info(self.kubeconfig))
        return self._client

    async def credentials_probe(self) -> dict[str, Any]:
        """The liveness check: fails while the API server refuses Candor's credentials, even read afresh.

        kopf's probe answers 200 as long as its loop runs, but an operator whose every write gets 401
        reconciles nothing; failing the probe lets the kubelet restart it. Any other error (an API
        server that is down, a timeout) is reported, not failed: a restart would not cure it.
        """
        try:
            await self.client.get("/version", timeout=self.settings.lookup_timeout)
        except ApiError as error:
            if error.status == 401:
                since = self.client.unauthorized_since
                refused_for = time.monotonic() - since if since is not None else 0.0
                raise kopf.PermanentError(
                    f"the API server refuses Candor's credentials (HTTP 401 for {refused_for:.0f} s)"
                ) from error
            return {"api": f"HTTP {error.status}"}
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return {"api": f"unreachable: {type(error).__name__}"}
        return {"api": "ok"}

    async def start_metrics(self, settings: kopf.OperatorSettings) -> None:
        metrics.build_info(self.settings.sidecar.image)
        if not self.settings.metrics:
            return
        peering = None if settings.peering.standalone else settings.peering.name
        watch = ReplicaWatch(self.client, peering, own_identity(), settings.peering.priority,
                             timeout=self.settings.lookup_timeout)
        self.metrics_server = MetricsServer(self.settings.metrics, watch)
        await self.metrics_server.start()

    def start_informers(self) -> None:
        self.policies.start()
        self.services.start()
        self.deployments.start()
        self.pods.start()

    async def informers_synced(self) -> None:
        """Until the Service and Deployment caches hold their first listing (kopf made policy handlers wait
        for its indices the same way)."""
        await self.services.wait_synced()
        await self.deployments.wait_synced()

    async def _standing_by_lately(self) -> bool:
        """`_standing_by`, looked up at most every STANDBY_CACHE_SECONDS: kopf pauses its own watches on a
        standby replica, and the Service and Deployment handlers stand by with it."""
        now = time.monotonic()
        if self._standby is None or now - self._standby[0] > STANDBY_CACHE_SECONDS:
            self._standby = (now, await self._standing_by())
        return self._standby[1]

    async def close(self) -> None:
        for informer in (self.services, self.deployments, self.policies, self.pods):
            await informer.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await self.readiness.stop()
        if self._client is not None:
            await self._client.close()

    def configure(self, settings: kopf.OperatorSettings) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our own Events say what happened; no "handler succeeded" noise
        settings.posting.reporting_component = "candor-operator"
        settings.posting.worker_limit = 8
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # Always the cluster-wide ClusterKopfPeering, also for `-n` operators: one object for the chart to
        # install and one RBAC rule, whatever the served namespaces.
        settings.peering.clusterwide = True
        if self.settings.peering and not self.settings.standalone:
            settings.peering.name = self.settings.peering
        settings.peering.standalone = self.settings.standalone or not self.settings.peering
        settings.peering.priority = (
            self.settings.priority if self.settings.priority is not None else random.SystemRandom().randint(1, 2**30)
        )
        self.kopf_priority = settings.peering.priority
        if self.settings.webhook.enabled:
            settings.admission.server = webhook.server(self.settings.webhook)
            settings.admission.managed = self.settings.webhook.managed

    async def start_readiness(self) -> None:
        if self.settings.readiness:
            await self.readiness.start(self.settings.readiness)

    # ---- HealthPolicy --------------------------------------------------------------------------

    async def reconcile(self, body: kopf.Body, status: Mapping[str, Any], patch: kopf.Patch, indices: Any) -> None:
        started, result = time.perf_counter(), "error"
        try:
            result = await self._reconcile(body, status, patch, indices)
        finally:
            metrics.reconciled(result, time.perf_counter() - started)

    async def _reconcile(self, body: kopf.Body, status: Mapping[str, Any], patch: kopf.Patch, indices: Any) -> str:
        """One reconcile; its result for the metrics (candor_operator.metrics.RECONCILE_RESULTS)."""
        summary = summarize(plain(body))
        try:
            outcome = await reconcile_policy(
                self.client,
                summary,
                status,
                services=namespace_slice(indices[SERVICES], summary.namespace),
                policies=namespace_slice(indices[POLICIES], summary.namespace),
                deployments=namespace_slice(indices[DEPLOYMENTS], summary.namespace),
                sidecar_image=self.settings.sidecar.image,
                heals=self.heals,
                upgrades=self.upgrades,
            )
        except ApiError as error:
            if not error.namespace_terminating:
                raise
            # The policy, its Services and its ConfigMap are going with the namespace; retrying would
            # only log the same refusal until then (and an Event could not be posted there either).
            logger.info("HealthPolicy %s/%s: its namespace is being deleted; nothing written",
                        summary.namespace, summary.name)
            return "skipped"
        for key, value in outcome.status.items():
            if status.get(key) != value:
                patch.status[key] = value
        for event_type, reason, message in outcome.events:
            kopf.event(body, type=event_type, reason=reason, message=message)
        metrics.GOVERNED.record(summary.namespace, summary.name, outcome.pods)
        await self.advance_upgrades(indices[DEPLOYMENTS], indices[POLICIES])
        return outcome.result

    async def delete(self, body: kopf.Body, indices: Any) -> None:
        summary = summarize(plain(body))
        released = await release_policy(self.client, summary, namespace_slice(indices[POLICIES], summary.namespace))
        metrics.GOVERNED.forget(summary.namespace, summary.name)
        logger.info("HealthPolicy %s/%s deleted; released Services: %s", summary.namespace, summary.name, released)
        if released:
            kopf.event(body, type="Normal", reason="Released",
                       message=f"Candor's annotations removed from (or handed on for) Service {', '.join(released)}; "
                               f"ConfigMap {summary.configmap} deleted")

    # ---- Services and Deployments ----------------------------------------------------------------

    async def service_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        if event_type == "DELETED" or await self._standing_by_lately():
            return
        service = slim_service(body)
        namespace = str(service["metadata"]["namespace"])
        await self.policies.wait_synced()
        policies: list[PolicySummary] = namespace_slice(self.policies, namespace)
        owner = record_of(service["metadata"]["annotations"]).policy
        if event_type is None:
            # The initial listing (a start): every policy's create/resume handler reconciles the Services it
            # targets, so only a Service still claimed by a policy that no longer exists needs work here.
            if owner is None or any(p.name == owner for p in policies):
                return
        elif not policies and owner is None:
            return
        written: list[Decision] = []
        await reconcile_service(self.client, service, [p.view for p in policies], on_write=written.append)
        for decision in written:
            await _service_event(self.client, body, decision)

    async def deployment_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        # Every Deployment event may be the end of the rollout the upgrade queue waits for (or the deletion of
        # a waiting or rolling Deployment), so each one ends with a look at that queue.
        try:
            await self._deployment_event(event_type, body)
        finally:
            await self.advance_upgrades(self.deployments, self.policies)

    async def _deployment_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        if event_type == "DELETED":
            self.upgrades.forget((str(metadata.get("namespace")), str(metadata.get("name"))))
            return
        deployment = rollout.slim_deployment(body)
        if deployment is None:
            self.upgrades.forget((str(metadata.get("namespace")), str(metadata.get("name"))))
            return
        if await self._standing_by_lately():
            return
        await self.policies.wait_synced()
        policies = namespace_slice(self.policies, str(deployment["namespace"]))
        policy = rollout.governing_policy(deployment["labels"], policies)
        if policy is not None:
            await ensure_min_ready(self.client, deployment, policy.min_ready_seconds)
        why = await rollout.ensure_rolled_out(self.client, deployment, policy, self.settings.sidecar.image, self.heals,
                                              self.upgrades)
        if why:
            logger.info("restarted Deployment %s/%s %s", deployment["namespace"], deployment["name"], why)
            await object_events.post(
                self.client, body, "Normal", "Restarted",
                f"Candor restarted the Deployment (HealthPolicy {policy.name if policy else '?'}) {why}")

    async def advance_upgrades(self, deployments: Any, policies: Any) -> None:
        """Restart the next Deployment waiting for the current sidecar when no rollout is under way.

        `deployments`, `policies`: every namespace's (the Deployment cache; the policy cache or kopf's index).
        A standby replica restarts nothing: its Deployment handler queued nothing, and the check says so."""
        if self.upgrades.waiting and await self._standing_by_lately():
            return
        try:
            restarted = await rollout.advance_upgrades(self.client, self.upgrades, deployments, policies,
                                                       self.settings.sidecar.image)
        finally:
            metrics.UPGRADES_WAITING.set(self.upgrades.waiting)
        if restarted is None:
            return
        deployment, policy = restarted
        namespace, name = deployment["namespace"], deployment["name"]
        logger.info("restarted Deployment %s/%s onto sidecar %s (%d more waiting)", namespace, name,
                    self.settings.sidecar.image, self.upgrades.waiting)
        uid = str(deployment.get("uid") or "")
        reference = {"apiVersion": "apps/v1", "kind": "Deployment",  # what an Event needs to name it
                     "metadata": {"namespace": namespace, "name": name, "uid": uid}}
        await object_events.post(
            self.client, reference, "Normal", rollout.UPGRADE_REASON,
            f"Candor restarted the Deployment (HealthPolicy {policy.name}) onto sidecar "
            f"{self.settings.sidecar.image} of candor {VERSION}: its pods ran another; "
            f"{self.upgrades.waiting} more Deployments wait, one at a time")


async def _service_event(client: KubeClient, body: dict[str, Any], decision: Decision) -> None:
    """The Event on a Service whose annotations Candor just changed (outside a policy's own reconcile)."""
    if decision.owner is None:
        await object_events.post(client, body, "Normal", "Released",
                                 "Candor's annotations removed: no HealthPolicy targets this Service any more")
    else:
        await object_events.post(client, body, "Normal", "Annotated",
                                 f"Candor's annotations written for HealthPolicy {decision.owner}")


def build_registry(operator: CandorOperator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resync = operator.settings.resync_seconds

    def indices_of(kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {POLICIES: kwargs.get(POLICIES), SERVICES: operator.services, DEPLOYMENTS: operator.deployments}

    @kopf.on.login(registry=registry, id="login")
    async def login(**_: Any) -> kopf.AiohttpSession:
        # A private registry does not get kopf's default login handlers: use the same credentials as our client,
        # in a session with a connection limit (kopf closes it when it re-logs in, and calls this again).
        # kopf calls this again at once after any 401; the pacer keeps a refused token from becoming a busy loop.
        wait = operator.login_pacer.delay()
        if wait:
            logger.warning("logging in again %.1f s after credentials were refused (%d in a row)",
                           wait, operator.login_pacer.streak)
            await asyncio.sleep(wait)
        info = connection_info(operator.kubeconfig)
        connector = aiohttp.TCPConnector(
            limit=KOPF_CONNECTIONS + 4 * len(operator.settings.namespaces), ssl=info.as_ssl_context()
        )
        session = aiohttp.ClientSession(connector=connector, headers=info.as_http_headers(),
                                        trace_configs=[operator.watches.trace_config()])
        operator.logged_in = True
        return kopf.AiohttpSession(
            server=info.server, default_namespace=info.default_namespace, aiohttp_session=session
        )

    @kopf.on.probe(registry=registry, id="credentials")
    async def credentials(**_: Any) -> dict[str, Any]:
        return await operator.credentials_probe()

    @kopf.on.startup(registry=registry, id="configure")
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        operator.configure(settings)
        operator.start_informers()
        await operator.start_metrics(settings)
        await operator.start_readiness()

    @kopf.on.cleanup(registry=registry, id="close")
    async def close(**_: Any) -> None:
        await operator.close()

    # Indexers are coroutines: kopf runs plain functions in a thread pool, a hop per event that dominated
    # the initial listing of hundreds of objects.
    @kopf.index(GROUP, CRD_VERSION, PLURAL, id=POLICIES, registry=registry)
    async def index_policies(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, PolicySummary]:
        return {namespace or "": summarize(plain(body))}

    @kopf.on.resume(GROUP, CRD_VERSION, PLURAL, registry=registry, id="reconcile", backoff=RETRY_BACKOFF)
    @kopf.on.create(GROUP, CRD_VERSION, PLURAL, registry=registry, id="reconcile", backoff=RETRY_BACKOFF)
    @kopf.on.update(GROUP, CRD_VERSION, PLURAL, registry=registry, id="reconcile", backoff=RETRY_BACKOFF)
    async def reconcile(body: kopf.Body, status: Any, patch: kopf.Patch, **kwargs: Any) -> None:
        await operator.informers_synced()
        await operator.reconcile(body, status, patch, indices_of(kwargs))

    @kopf.timer(GROUP, CRD_VERSION, PLURAL, interval=resync, initial_delay=resync, registry=registry, id="resync",
                backoff=RETRY_BACKOFF)
    async def resync_policy(body: kopf.Body, status: Any, patch: kopf.Patch, **kwargs: Any) -> None:
        # A timer runs beside the object's handlers and may see its body from before their status write: a
        # status that does not show the current generation yet belongs to the reconcile handler, and a resync
        # from that older view would write the conditions again with new transition times.
        if (status or {}).get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
            return
        await operator.informers_synced()
        await operator.reconcile(body, status, patch, indices_of(kwargs))

    @kopf.on.delete(GROUP, CRD_VERSION, PLURAL, registry=registry, id="release", backoff=RETRY_BACKOFF)
    async def release(body: kopf.Body, **kwargs: Any) -> None:
        await operator.informers_synced()
        await operator.delete(body, indices_of(kwargs))

    if operator.settings.webhook.enabled:
        @kopf.on.mutate("", "v1", "pods", operations=["CREATE"], id=webhook.HANDLER_ID, side_effects=False,
                        ignore_failures=True, registry=registry)
        async def inject_pod(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **kwargs: Any) -> None:
            await operator.admission.admit_pod(body, patch, warnings, indices_of(kwargs))

        @kopf.on.mutate("apps", "v1", "deployments", operations=["CREATE", "UPDATE"], id=webhook.LABEL_HANDLER_ID,
                        side_effects=False, ignore_failures=True, registry=registry)
        async def label_deployment(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **kwargs: Any) -> None:
            await operator.admission.label_deployment(body, kwargs.get("old"), patch, warnings)

    return registry

