"""A small asyncio Kubernetes API client on aiohttp, re-reading its credentials when they are refused.

kopf has no public client for arbitrary reads and patches, and the official async client is large;
the operator needs a handful of verbs on a few resources, with the API server's own error codes
(409 Conflict for a stale resourceVersion, 404, 422) surfaced as `ApiError.status`.

Credentials are not captured once: on a 401 the client reads them again (token file, kubeconfig,
certificates) and, if they changed, retries that request once with the new ones, as the official
clients do with a rotated service-account token. While requests keep being refused,
`unauthorized_since` says since when, for the liveness probe.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

from candor_operator.credentials import Loader, fingerprint

logger = logging.getLogger("candor.operator")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, message: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.causes = causes  # the Status's details.causes[].reason, e.g. NamespaceTerminating

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted: nothing may be created in it any more."""
        return self.status == 403 and "NamespaceTerminating" in self.causes


# Asks the API server for metadata only (a PartialObjectMetadataList), as kubectl's and controllers' metadata
# informers do; the server answers JSON.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


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


def _api_error(status: int, method: str, path: str, text: str) -> ApiError:
    """The API server's Status object, read for its message and causes (plain text when it is not one)."""
    try:
        document = json.loads(text)
    except ValueError:
        return ApiError(status, method, path, text)
    if not isinstance(document, dict):
        return ApiError(status, method, path, text)
    details = document.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        causes = []
    # A StatusCause's type is serialised as "reason".
    reasons = tuple(str(c.get("reason")) for c in causes if isinstance(c, dict))
    return ApiError(status, method, path, str(document.get("message", text)), reasons)


class _Login:
    """One set of credentials and the session that sends them (a new certificate needs a new connector)."""

    def __init__(self, info: kopf.ConnectionInfo, timeout: aiohttp.ClientTimeout) -> None:
        self.server = info.server.rstrip("/")
        self.fingerprint = fingerprint(info)
        ssl = info.as_ssl_context() if self.server.startswith("https") else False
        self.session = aiohttp.ClientSession(
            headers={"Accept": "application/json", **info.as_http_headers()}, timeout=timeout,
            connector=aiohttp.TCPConnector(ssl=ssl, limit=32),
        )


class KubeClient:
    def __init__(self, credentials: Loader, timeout: float = 30.0) -> None:
        self._load = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._login: _Login | None = None
        # A session replaced after a re-read may still carry requests; it is closed at the next replacement.
        self._retired: _Login | None = None
        self.unauthorized_since: float | None = None  # time.monotonic() of the first refusal in a row

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _current(self) -> _Login:
        if self._login is None:
            self._login = _Login(self._load(), self._timeout)
        return self._login

    async def _relogin(self, refused: _Login) -> bool:
        """Read the credentials again after `refused` got a 401; True when a retry can use different ones."""
        if self._login is not refused:
            return True  # another request has already read them again
        try:
            info = self._load()
        except (kopf.LoginError, OSError, ValueError) as error:
            logger.warning("credentials refused and cannot be read again: %s", error)
            return False
        if fingerprint(info) == refused.fingerprint:
            return False
        if self._retired is not None:
            await self._retired.session.close()
        self._retired, self._login = refused, _Login(info, self._timeout)
        logger.info("credentials refused (HTTP 401); read them again and retrying with the renewed ones")
        return True

    async def close(self) -> None:
        for login in (self._login, self._retired):
            if login is not None:
                await login.session.close()
        self._login = self._retired = None

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        accept: str | None = None,
    ) -> dict[str, Any]:
        login = self._current()
        try:
            result = await self._send(login, method, path, body, content_type, params, timeout, accept)
        except ApiError as error:
            if error.status != 401:
                raise
            if not await self._relogin(login):
                self._refused()
                raise
            try:
                result = await self._send(self._current(), method, path, body, content_type, params, timeout, accept)
            except ApiError as retry_error:
                if retry_error.status == 401:
                    self._refused()
                raise
        self.unauthorized_since = None
        return result

    def _refused(self) -> None:
        if self.unauthorized_since is None:
            self.unauthorized_since = time.monotonic()

    async def _send(
        self,
        login: _Login,
        method: str,
        path: str,
        body: object,
        content_type: str,
        params: Mapping[str, str] | None,
        timeout: float | None,
        accept: str | None = None,
    ) -> dict[str, Any]:
        url = login.server + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        request_timeout = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
        async with login.session.request(
            method, url, data=data, headers=headers, timeout=request_timeout
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise _api_error(response.status, method, path, text)
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
        return await self._list(path, label_selector, None)

    async def list_metadata(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """The objects' metadata only (PartialObjectMetadataList): for pods, never their specs, whose env may
        hold literal secrets the operator has no use for."""
        return await self._list(path, label_selector, METADATA_ONLY)

    async def _list(self, path: str, label_selector: str | None, accept: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.request("GET", path, params=params, accept=accept)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def watch(self, path: str, params: Mapping[str, str], timeout: float,
                    opened: Callable[[], None] | None = None) -> AsyncIterator[dict[str, Any]]:
        """The watch events of `path` (`params` carry resourceVersion, timeoutSeconds...), one dict each, until
        the server ends the stream; `opened()` once the server accepted it. A refusal raises ApiError (after a
        401, with the credentials read again for the next call)."""
        login = self._current()
        url = login.server + path + f"?{urlencode({**params, 'watch': 'true'})}"
        async with login.session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout)) as response:
            if response.status >= 400:
                if response.status == 401 and not await self._relogin(login):
                    self._refused()
                raise _api_error(response.status, "GET", path, await response.text())
            self.unauthorized_since = None
            if opened is not None:
                opened()
            pending = b""
            # Split by hand: aiohttp's readline refuses lines above 64 KiB, and one object can be larger.
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", path, body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, MERGE_PATCH)

    async def delete(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("DELETE", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
