"""The pod webhook's decisions: whether a pod asked for the sidecar (itself or through its Deployment), which
policy governs it, its serving ports, and the patch that injects it; and the label the Deployment webhook puts
into annotated pod templates. Reads kopf's indices, and asks the API server where an index may lag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from candor_operator import governed, injection, metrics, rollout
from candor_operator.api_names import (
    API_VERSION,
    CONFIG_HASH_ANNOTATION,
    INJECT_LABEL,
    PLURAL,
    POLICY_ANNOTATION,
    SIDECAR_IMAGE_ANNOTATION,
    STATUS_ANNOTATION,
    VERSION_ANNOTATION,
)
from candor_operator.app_ports import serving_ports
from candor_operator.kube import ApiError, KubeClient, path_for
from candor_operator.operator_indices import DEPLOYMENTS, POLICIES, SERVICES, namespace_slice, plain
from candor_operator.services import slim_service
from candor_operator.settings import OperatorSettings
from candor_operator.summary import PolicySummary, summarize
from candor_sidecar.release import VERSION

logger = logging.getLogger("candor.operator")


class PodAdmission:
    """The pod and Deployment webhooks of one operator process (`client`: its API client, made at login)."""

    def __init__(self, settings: OperatorSettings, client: Callable[[], KubeClient]) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> KubeClient:
        return self._client()

    async def _deployment_asks(self, pod: Mapping[str, Any], namespace: str, indices: Any) -> bool:
        name = injection.deployment_name_of(pod)
        if name is None:
            return False
        if any(d.get("name") == name for d in namespace_slice(indices[DEPLOYMENTS], namespace)):
            return True
        # A standby replica (paused by peering) does not watch, so its index can lag: ask the API server.
        try:
            deployment = await self.client.get_or_none(
                path_for("apps/v1", "deployments", namespace, name), timeout=self.settings.lookup_timeout
            )
        except (ApiError, TimeoutError, OSError) as error:
            logger.warning("cannot look up Deployment %s/%s for injection: %s", namespace, name, error)
            return False
        return deployment is not None and rollout.slim_deployment(deployment) is not None

    async def _policies_for(self, namespace: str, indices: Any) -> list[PolicySummary]:
        policies = namespace_slice(indices[POLICIES], namespace)
        if policies:
            return policies
        try:
            items = await asyncio.wait_for(
                self.client.list_items(path_for(API_VERSION, PLURAL, namespace)), self.settings.lookup_timeout
            )
        except (ApiError, TimeoutError, OSError) as error:
            logger.warning("cannot list HealthPolicies in %s for injection: %s", namespace, error)
            return []
        return [summarize(item) for item in items]

    async def _services_for(self, namespace: str, indices: Any) -> list[dict[str, Any]]:
        """The namespace's Services (slim), from the index; asked of the API server when the index has none
        (a standby replica does not watch)."""
        services = namespace_slice(indices[SERVICES], namespace)
        return services or await self._listed_services(namespace)

    async def _listed_services(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Services (slim), asked of the API server."""
        try:
            items = await asyncio.wait_for(self.client.list_items(path_for("v1", "services", namespace)),
                                           self.settings.lookup_timeout)
        except (ApiError, TimeoutError, OSError) as error:
            logger.warning("cannot list Services in %s for injection: %s", namespace, error)
            return []
        return [slim_service(item) for item in items]

    async def mutate_pod(self, body: kopf.Body, patch: kopf.Patch, warnings: list[str], indices: Any) -> None:
        pod = plain(body)
        metadata = pod.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        if namespace in injection.SYSTEM_NAMESPACES or injection.already_injected(pod):
            metrics.admission("skipped", "system-namespace" if namespace in injection.SYSTEM_NAMESPACES
                              else "already-injected")
            return
        if not (injection.inject_requested(metadata.get("annotations"))
                or await self._deployment_asks(pod, namespace, indices)):
            metrics.admission("skipped", "not-requested")
            return
        skipped = injection.skip_reason(pod)
        if skipped is not None:
            warnings.append(f"candor: no sidecar added: {skipped}")
            metrics.admission("skipped", "host-network")
            _mark_skipped(patch)
            return
        policy = rollout.governing_policy(metadata.get("labels") or {}, await self._policies_for(namespace, indices))
        if policy is None or policy.target is None:
            warnings.append("candor: injection requested but no valid HealthPolicy selects this pod; no sidecar added")
            metrics.admission("skipped", "no-policy")
            return
        ports = serving_ports(pod, await self._services_for(namespace, indices), policy.view.matcher)
        if not ports:
            # The index may not have a Service created moments before this pod yet (`kubectl apply -f` of a
            # whole app, then a rollout by the policy): a pod without its serving ports would be Ready early.
            ports = serving_ports(pod, await self._listed_services(namespace), policy.view.matcher)
        try:
            mutated = injection.inject(pod, policy.target, self.settings.sidecar, ports)
        except injection.InjectionConflict as conflict:
            warnings.extend(f"candor: no sidecar added: {problem}" for problem in conflict.problems)
            metrics.admission("skipped", "conflict")
            _mark_skipped(patch)
            return
        except ValueError as error:
            warnings.append(f"candor: no sidecar added: {error}")
            metrics.admission("skipped", "invalid-pod")
            _mark_skipped(patch)
            return
        config_hash = policy.config_hash(self.settings.sidecar.image)
        # Everything is computed before the patch is touched, so an error above leaves no half-injected pod.
        warnings.extend(f"candor: {warning}" for warning in injection.admission_warnings(pod, policy.target, ports))
        for key in ("initContainers", "containers", "volumes", "terminationGracePeriodSeconds"):
            patch.spec[key] = mutated["spec"][key]
        for key in (STATUS_ANNOTATION, POLICY_ANNOTATION):
            patch.metadata.annotations[key] = mutated["metadata"]["annotations"][key]
        patch.metadata.annotations[CONFIG_HASH_ANNOTATION] = config_hash
        patch.metadata.annotations[VERSION_ANNOTATION] = VERSION
        patch.metadata.annotations[SIDECAR_IMAGE_ANNOTATION] = self.settings.sidecar.image
        metrics.admission("injected")

    async def label_deployment(self, body: kopf.Body, old: kopf.Body | None, patch: kopf.Patch,
                               warnings: list[str]) -> None:
        """Put the label the pod webhook selects on into an annotated Deployment's template, when the
        template is new or changing anyway (governed.py); never fails the Deployment's admission."""
        try:
            if governed.label_template(plain(body), plain(old) if old else None):
                patch.spec["template"] = {"metadata": {"labels": {INJECT_LABEL: "true"}}}
        except Exception as error:
            logger.exception("labelling the pod template of a Deployment failed")
            patch.clear()
            warnings.append(f"candor: pod template not labelled: {type(error).__name__}: {str(error)[:200]}")

    async def admit_pod(self, body: kopf.Body, patch: kopf.Patch, warnings: list[str], indices: Any) -> None:
        """`mutate_pod`, never failing: kopf answers a handler's exception with a denial, which the API
        server obeys whatever the failurePolicy, so an unexpected error admits the pod unchanged instead."""
        try:
            await self.mutate_pod(body, patch, warnings, indices)
        except Exception as error:
            metadata = body.get("metadata") or {}
            logger.exception("injection failed for pod %s/%s", str(metadata.get("namespace"))[:63],
                             str(metadata.get("name") or metadata.get("generateName"))[:253])
            patch.clear()
            metrics.admission("error")
            reason = str(error)[:200] or type(error).__name__
            warnings.append(f"candor: no sidecar added: unexpected error: {type(error).__name__}: {reason}")


def _mark_skipped(patch: kopf.Patch) -> None:
    """Seen and left alone on purpose: the heal (rollout.missed_pods) tells it from a pod the webhook missed."""
    patch.metadata.annotations[STATUS_ANNOTATION] = injection.SKIPPED
