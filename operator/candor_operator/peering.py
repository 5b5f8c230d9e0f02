"""kopf's peering resources, so two operator replicas never reconcile at the same time.

kopf pauses every operator that sees a live peer with a higher priority (and pauses *both* on equal
priorities), so `candor operator` picks a random priority per process: exactly one replica is
active, the others serve the webhook and take over when its record expires or it exits.

The chart must install `CLUSTER_PEERING_CRD` and the `ClusterKopfPeering` named "candor"
(`cluster_peering("candor")`); the operator always uses the cluster-wide peering, also when it serves
only some namespaces (`-n`). Without a peering object kopf runs standalone.
"""

from __future__ import annotations

from typing import Any


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
