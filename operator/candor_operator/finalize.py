"""Before an uninstall: delete every HealthPolicy and wait until the running operator has finalized each one.

A HealthPolicy carries the operator's finalizer, so its deletion waits until the operator has removed what
it wrote (Service annotations, the sidecar ConfigMap). If the chart deleted the operator and the CRD at once,
nothing would remove the finalizers and the CRD would stay Terminating forever; the chart's pre-delete hook
runs `candor finalize` while the operator still runs.
"""

from __future__ import annotations

import asyncio
import time

from candor_operator.api_names import API_VERSION, PLURAL
from candor_operator.credentials import connection_info
from candor_operator.kube import KubeClient, path_for

POLICIES = path_for(API_VERSION, PLURAL)


async def finalize_all(kubeconfig: str | None, timeout: float) -> list[str]:
    """Delete every HealthPolicy; returns those still present after ``timeout`` (empty: all finalized)."""
    async with KubeClient(lambda: connection_info(kubeconfig)) as client:
        for policy in await client.list_items(POLICIES):
            meta = policy["metadata"]
            await client.delete(path_for(API_VERSION, PLURAL, meta["namespace"], meta["name"]))
        deadline = time.monotonic() + timeout
        while True:
            left = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in await client.list_items(POLICIES)]
            if not left or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.5)
