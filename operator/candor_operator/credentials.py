"""Where the operator's Kubernetes credentials come from, read afresh each time they are asked for.

Bound service-account tokens expire and are rewritten in place (the kubelet renews the projected
token file), and a kubeconfig can be renewed under a running process, so nothing here caches: kopf's
login and Candor's own client (after a 401) call `connection_info` again and get what the files say
now. `LoginPacer` spaces out logins that follow each other quickly, because kopf logs in again at
once after every 401 and a revoked token would otherwise make that a busy loop.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import yaml

Loader = Callable[[], kopf.ConnectionInfo]


def connection_info(kubeconfig: str | None = None) -> kopf.ConnectionInfo:
    """Credentials from --kubeconfig/KUBECONFIG/~/.kube/config, else the pod's service account."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads the same variable
    settings = kopf.OperatorSettings()
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is not None and not info.token:
        token_file = kubeconfig_token_file()
        if token_file is not None:
            info = dataclasses.replace(info, token=read_token(token_file))
    if info is None:
        info = _in_cluster(kopf.login_with_service_account(settings=settings))
    if info is None:
        raise kopf.LoginError("no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and no service account")
    return info


def _in_cluster(info: kopf.ConnectionInfo | None) -> kopf.ConnectionInfo | None:
    """The API server at the address the kubelet puts in the environment, as client-go's in-cluster config
    does; kopf's own service-account login names `kubernetes.default.svc`, which needs cluster DNS."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if info is None or not host:
        return info
    return dataclasses.replace(info, server=f"https://{f'[{host}]' if ':' in host else host}:{port}")


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise kopf.LoginError(f"kubeconfig user tokenFile {path}: cannot read it: {error}") from error
    if not token:
        raise kopf.LoginError(f"kubeconfig user tokenFile {path}: the file is empty")
    return token


def kubeconfig_token_file() -> Path | None:
    """The current context's user's `tokenFile` (kopf's kubeconfig login reads only an inline `token`).

    Same precedence as kopf's reader: the first file naming a current-context wins, and so does the
    first entry of each user name; a relative path is relative to the kubeconfig that holds it.
    """
    variable = os.environ.get("KUBECONFIG") or "~/.kube/config"
    current: str | None = None
    contexts: dict[str, dict[str, Any]] = {}
    users: dict[str, tuple[Path, dict[str, Any]]] = {}
    for entry in variable.split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry.strip()).expanduser()
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # kopf's own reader has already failed loudly on a broken file
        if not isinstance(config, dict):
            continue
        current = current or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(str(item.get("name")), item.get("context") or {})
        for item in config.get("users") or []:
            users.setdefault(str(item.get("name")), (path, item.get("user") or {}))
    context = contexts.get(str(current)) or {}
    source, user = users.get(str(context.get("user")), (Path("."), {}))
    token_file = user.get("tokenFile")
    if not isinstance(token_file, str) or not token_file:
        return None
    return (source.parent / Path(token_file).expanduser()).resolve()


def fingerprint(info: kopf.ConnectionInfo) -> tuple[object, ...]:
    """What a client sends: the fields and the bytes of every file they name, so a certificate
    renewed under the same path counts as a change."""
    contents = []
    for path in (info.ca_path, info.certificate_path, info.private_key_path):
        try:
            contents.append(Path(os.fsdecode(path)).read_bytes() if path else None)
        except OSError:
            contents.append(None)
    fields = dataclasses.replace(info, expiration=None)
    return (fields, *contents)


class LoginPacer:
    """How long to wait before a login: nothing for the first in a while, then a doubling delay.

    A login soon after the previous one means the credentials it returned were refused at once; asking
    again immediately only hammers the API server with the same refused token. The delay doubles from
    `first` up to `maximum` and the streak ends once logins are `settle` seconds apart.
    """

    def __init__(self, first: float = 0.5, maximum: float = 10.0, settle: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first, self.maximum, self.settle = first, maximum, settle
        self._clock = clock
        self._last: float | None = None
        self.streak = 0

    def delay(self) -> float:
        """The wait before the login being started now; call once per login."""
        now = self._clock()
        if self._last is None or now - self._last > self.settle:
            self.streak = 0
        else:
            self.streak += 1
        wait = 0.0 if self.streak == 0 else min(self.maximum, self.first * 2 ** (self.streak - 1))
        self._last = now + wait
        return wait
