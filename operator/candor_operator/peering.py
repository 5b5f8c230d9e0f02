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

import datetime
import getpass
import os
import socket
from collections.abc import Mapping
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


def peer_alive(entry: Mapping[str, Any], now: datetime.datetime) -> bool:
    try:
        seen = datetime.datetime.fromisoformat(str(entry["lastseen"]))
        lifetime = float(entry.get("lifetime", 60))
    except (KeyError, TypeError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return seen + datetime.timedelta(seconds=lifetime) > now


def replica_is_active(peers: Mapping[str, Any], identity: str, priority: int,
                      now: datetime.datetime | None = None) -> bool:
    """kopf's rule, from the ClusterKopfPeering's status (identity -> {priority, lifetime, lastseen}): a replica
    pauses while another live peer has a higher priority, and (both) while one has the same priority."""
    moment = now or datetime.datetime.now(datetime.UTC)
    for peer, entry in peers.items():
        if peer == identity or not isinstance(entry, Mapping) or not peer_alive(entry, moment):
            continue
        try:
            if int(entry.get("priority", 0)) >= priority:
                return False
        except (TypeError, ValueError):
            continue
    return True


def own_identity() -> str:
    """The identity kopf announces in the peering object: POD_ID when set (the chart sets the pod's name), else
    one this function makes and exports for kopf to read, so the operator can find itself among the peers."""
    identity = os.environ.get("POD_ID")
    if not identity:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # a container user without a passwd entry
            user = f"uid{os.getuid()}"
        identity = f"{user}@{socket.gethostname()}/{os.getpid()}"
        os.environ["POD_ID"] = identity
    return identity
