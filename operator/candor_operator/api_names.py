"""Candor's names in the Kubernetes API: the HealthPolicy's group, version and kind, and the `candor.io/...`
annotation and label keys the operator writes and reads on other objects.

Written out in full, so a search for a key finds its one home. The CRD, kopf's handlers, the API paths,
the RBAC rules, the injection, the rollout and `candor check` take them from here. (The names the injected
pod's containers read are in candor_tracer.pod_contract.)
"""

from __future__ import annotations

# The HealthPolicy custom resource.
GROUP = "candor.io"
CRD_VERSION = "v1alpha1"  # the one version the CRD serves and stores
API_VERSION = "candor.io/v1alpha1"  # a HealthPolicy's `apiVersion`
KIND = "HealthPolicy"
PLURAL = "healthpolicies"
SINGULAR = "healthpolicy"
CRD_NAME = "healthpolicies.candor.io"
FINALIZER = "candor.io/finalizer"  # on each HealthPolicy: the operator releases what it wrote before it goes

# Pods and their templates.
INJECT_ANNOTATION = "candor.io/inject"  # the user's switch, "true" on a Deployment or a pod
INJECT_LABEL = INJECT_ANNOTATION  # the same key, as a label: what the pod webhook's matchConditions select on
STATUS_ANNOTATION = "candor.io/status"  # on a pod the webhook saw: injected or skipped (never injected twice)
POLICY_ANNOTATION = "candor.io/policy"  # on an injected pod: the HealthPolicy that governs it
POLICY_LABEL = POLICY_ANNOTATION  # the same key, as a label: on the sidecar ConfigMap of that policy
VERSION_ANNOTATION = "candor.io/version"  # on an injected pod: the Candor release whose sidecar it runs
SIDECAR_IMAGE_ANNOTATION = "candor.io/sidecar-image"  # on an injected pod: the sidecar image it was given
CONFIG_HASH_ANNOTATION = "candor.io/config-hash"  # on a pod and its template: the sidecar config it runs
HEAL_ANNOTATION = "candor.io/heal"  # on a template: restarted once more for pods the webhook never saw

# Deployments and Services.
MIN_READY_ANNOTATION = "candor.io/min-ready-seconds"  # on a Deployment: why its minReadySeconds is what it is
MANAGED_ANNOTATIONS = "candor.io/managed-annotations"  # on a Service: which annotations Candor wrote (ownership)
