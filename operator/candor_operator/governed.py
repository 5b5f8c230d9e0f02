"""What lets the API server send Candor only the pods it governs, instead of every pod of the cluster.

The user's switch stays the annotation `candor.io/inject: "true"` on a Deployment (or on a pod
template, or a bare pod). The API server cannot see a pod's Deployment, so the webhook's
`matchConditions` (CEL, GA in Kubernetes 1.30) look at the pod itself: only a pod whose labels or
annotations carry `candor.io/inject: "true"` is sent. The label reaches the pods of an annotated
Deployment through its pod template, written only when the template changes anyway, so it never
causes a rollout of its own (and `rollout: Manual` never restarts anything):

- a second webhook, on Deployments that carry the annotation, adds the label to the template when the
  Deployment is created or its template changes (a new image, `kubectl rollout restart`);
- the operator's own restarts (`rollout: Automatic`) carry the label in the same patch.

Annotating an existing Deployment changes no template: with `rollout: Automatic` the operator restarts
it as before (now with the label); with `Manual` its pods get the sidecar from its next rollout on.
Every other pod of the cluster (system, ingress, monitoring) is created without calling Candor, so an
operator that is down, slow or hung delays none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from candor_operator.api_names import INJECT_ANNOTATION, INJECT_LABEL
from candor_operator.injection import inject_requested


def _says_true(field: str) -> str:
    """CEL: the map at `field` (which may be absent) has candor.io/inject set to true (any case, spaces around)."""
    return (f"(has({field}) && '{INJECT_ANNOTATION}' in {field} && "
            f"{field}['{INJECT_ANNOTATION}'].lowerAscii().trim() == 'true')")


POD_MATCH_CONDITIONS: list[dict[str, str]] = [
    {"name": "governed-pods-only",
     "expression": f"{_says_true('object.metadata.labels')} || {_says_true('object.metadata.annotations')}"},
]

DEPLOYMENT_MATCH_CONDITIONS: list[dict[str, str]] = [
    {"name": "annotated-deployments-only",
     "expression": (f"{_says_true('object.metadata.annotations')} || (has(object.spec.template.metadata) && "
                    f"{_says_true('object.spec.template.metadata.annotations')})")},
]


def template_labelled(template: Mapping[str, Any]) -> bool:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return str(labels.get(INJECT_LABEL, "")).strip().lower() == "true"


def label_template(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether the webhook adds the label to this Deployment's pod template: it asks for injection, its
    template lacks the label, and the template is new or changing anyway (so no rollout is added)."""
    metadata = new.get("metadata") or {}
    template = (new.get("spec") or {}).get("template") or {}
    if not (inject_requested(metadata.get("annotations"))
            or inject_requested((template.get("metadata") or {}).get("annotations"))):
        return False
    if template_labelled(template):
        return False
    if old is None:
        return True
    return dict((old.get("spec") or {}).get("template") or {}) != dict(template)
