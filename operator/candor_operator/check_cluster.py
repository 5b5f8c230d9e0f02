"""The API access of `candor check`, on the official `kubernetes` client.

A user's kubeconfig may authenticate in any way kubectl does: exec credential plugins (EKS, GKE, AKS,
kubelogin), OIDC, client certificates, tokens. The official client implements them all; kopf and
candor_operator.kube understand only part of that. Objects are read as plain JSON (the same
mappings the operator's decision code takes) through the client's ApiClient, so its authentication,
token refresh and TLS settings apply to every request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException


class ClusterError(Exception):
    """The API server refused or failed a request; `status` is its HTTP status (0 when unreachable)."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: " + (f"HTTP {status}: {message}" if status else message))
        self.status = status
        self.message = message


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A client for the kubeconfig (KUBECONFIG, ~/.kube/config) or, inside a pod, its service account."""
    try:
        made: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context)
        return made
    except ConfigException:
        if kubeconfig or context:
            raise
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Cluster:
    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        self.api = api
        self.timeout = timeout

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    def request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                body: Any = None) -> tuple[int, Any]:
        """(HTTP status, parsed JSON or text); ClusterError when the server cannot be reached."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            serialized = self.api.param_serialize(
                method=method, resource_path=path, query_params=list((query or {}).items()) or None,
                header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            raw = response.read()  # type: ignore[no-untyped-call]
        except client.ApiException as error:
            raise ClusterError(int(error.status or 0), method, path, str(error.reason)) from error
        except Exception as error:  # urllib3's connection and TLS errors, a failing credential plugin
            raise ClusterError(0, method, path, f"{type(error).__name__}: {error}") from error
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        try:
            return int(response.status), json.loads(text) if text else {}
        except ValueError:
            return int(response.status), text

    def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """The object, None on 404; ClusterError for any other refusal."""
        status, data = self.request("GET", path, query)
        if status == 404:
            return None
        if status >= 400 or not isinstance(data, dict):
            raise ClusterError(status, "GET", path, _message(data))
        return data

    def items(self, path: str, query: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        found = self.get(path, query)
        return list((found or {}).get("items") or [])


def _message(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or data)
    return str(data)[:300]
