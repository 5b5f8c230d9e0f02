"""A small asyncio Kubernetes API client on aiohttp, using the credentials kopf logs in with.

kopf has no public client for arbitrary reads and patches, and the official async client is large;
the operator needs a handful of verbs on a few resources, with the API server's own error codes
(409 Conflict for a stale resourceVersion, 404, 422) surfaced as `ApiError.status`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message


def connection_info(kubeconfig: str | None = None) -> kopf.ConnectionInfo:
    """Credentials from --kubeconfig/KUBECONFIG/~/.kube/config, else the pod's service account."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads the same variable
    settings = kopf.OperatorSettings()
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        info = kopf.login_with_service_account(settings=settings)
    if info is None:
        raise kopf.LoginError("no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and no service account")
    return info


def path_for(
    api: str, resource: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    """`api` is "v1" for the core group or "group/version"."""
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{resource}"
    if name:
        base += f"/{quote(name, safe='')}"
    if subresource:
        base += f"/{subresource}"
    return base


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo, timeout: float = 30.0) -> None:
        self._server = info.server.rstrip("/")
        self._headers = {"Accept": "application/json", **info.as_http_headers()}
        self._ssl = info.as_ssl_context() if self._server.startswith("https") else None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=32)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        url = self._server + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        request_timeout = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
        async with self._get_session().request(
            method, url, data=data, headers=headers, timeout=request_timeout
        ) as response:
            text = await response.text()
            if response.status >= 400:
                message = text
                with contextlib.suppress(ValueError):
                    message = json.loads(text).get("message", text)
                raise ApiError(response.status, method, path, message)
            result = json.loads(text) if text else {}
            return result if isinstance(result, dict) else {"items": result}

    async def get(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        return await self.request("GET", path, timeout=timeout)

    async def get_or_none(self, path: str, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return await self.get(path, timeout=timeout)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list_items(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.request("GET", path, params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", path, body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.request("PATCH", path, ops, JSON_PATCH)

    async def delete(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("DELETE", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
