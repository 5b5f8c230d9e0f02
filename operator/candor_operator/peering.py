"""kopf's peering resources, so two operator replicas never reconcile at the same time.

kopf pauses every operator that sees a live peer with a higher priority (and pauses *both* on equal
priorities), so `candor operator` picks a random priority per process: exactly one replica is
active, the others serve the webhook and take over when its record expires or it exits.

The chart installs `CLUSTER_PEERING_CRD`; the operator creates the `ClusterKopfPeering` itself before kopf
starts (`ensure_cluster_peering`), because kopf runs standalone when the object is missing, and a chart
cannot ship a custom resource beside the CRD that defines it (Helm maps every template before it applies
any). The operator always uses the cluster-wide peering, also when it serves only some namespaces (`-n`).
"""

from __future__ import annotations

from typing import Any

from candor_operator.credentials import connection_info
from candor_operator.kube import ApiError, KubeClient


def _crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


CLUSTER_PEERING_CRD = _crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster")


def cluster_peering(name: str = "candor") -> dict[str, Any]:
    return {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}


async def ensure_cluster_peering(name: str, kubeconfig: str | None) -> None:
    """Create the ClusterKopfPeering ``name`` unless it exists (both replicas may race: 409 is success)."""
    async with KubeClient(lambda: connection_info(kubeconfig)) as client:
        try:
            await client.create("/apis/kopf.dev/v1/clusterkopfpeerings", cluster_peering(name))
        except ApiError as error:
            if error.status == 404:  # no peering CRD: kopf runs this replica standalone, and says so
                return
            if error.status != 409:
                raise
