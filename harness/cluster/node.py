"""A real one-machine Kubernetes node for the tests: containerd, runc, a bridge CNI, kubelet and kube-scheduler.

It joins the test control plane (harness/cluster/control_plane.py), so pods really run: images built from the
project's Dockerfiles (harness/cluster/images.py) are imported into containerd, nothing is pulled.

Layout, for a node named ``candor``:

* bridge ``cnd0`` with 10.244.77.1/24 (created here; its address is the node IP and the kubelet's address),
  pods get addresses from host-local IPAM on it; the host reaches pod IPs directly;
* pods reach the API server at ``https://kubernetes.default.svc`` (10.0.0.1:443) through one DNAT rule in
  a nat chain of the node's own, to a forwarder on the bridge address that relays to the API server on
  127.0.0.1. That is all kube-proxy would do here, and in-cluster clients work unchanged;
* containerd with its own root, state and socket (``netns_mounts_under_state_dir``: pod network namespaces
  live under its state dir, not /run/netns), ``restrict_oom_score_adj`` (the VM's bounding set lacks
  CAP_SYS_RESOURCE), runc with cgroupfs;
* kubelet with ``cgroupRoot: /candor-<name>`` (every pod cgroup lives in a subtree the node owns),
  ``failCgroupV1: false`` on a cgroup v1 host, its API on the bridge address only, client-certificate
  authentication (the cluster CA), no read-only port, no DNS server for pods (nothing may leave the machine).

Everything it changes outside its directories is recorded first and undone by
:func:`harness.cluster.node_machine.restore`, at stop and at the next start after a crash. One node of a name
at a time: a lock file guards it across test runs.

Run ``python -m harness.cluster.node serve --standalone --static-pod FILE`` for a kubelet without a control
plane (static pods only); ``python -m harness.cluster.node restore NAME`` undoes a crashed node.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from harness.cluster.certs import CertificateAuthority
from harness.cluster.components import ControlPlaneProcess, ensure_binaries, free_port
from harness.cluster.images import PAUSE_IMAGE, BuiltImage, build_images
from harness.cluster.node_machine import STATE, MachineRecord, cgroup_hierarchies, restore
from harness.processes.waiting import wait_until

CNI_BIN = Path("/usr/lib/cni")
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's ClusterIP in the test control plane (SERVICE_CIDR .1)
READY_TIMEOUT = 90.0


class ApiForwarder:
    """Relays TCP from the bridge address to the API server on 127.0.0.1 (TLS passes through untouched)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ, None)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="api-forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._pump(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._server.accept()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                return
            for one, other in ((client, upstream), (upstream, client)):
                one.setblocking(False)
                self._selector.register(one, selectors.EVENT_READ, other)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            data = source.recv(65536)
            if data:
                sink.setblocking(True)
                sink.sendall(data)
                sink.setblocking(False)
                return
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def running_containers(socket: Path) -> list[str]:
    """The lines of ``ctr tasks list`` for the running containers (pod sandboxes included) of a node's
    containerd, by its socket; none when it does not answer."""
    result = subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", "tasks", "list"],
                            capture_output=True, text=True, check=False)
    return [line for line in result.stdout.splitlines()[1:] if "RUNNING" in line]


def another_node(cluster: Any, number: int) -> Node:
    """Node ``number`` (2, 3, …) of ``cluster``: its own containerd, kubelet, bridge and pod subnet.

    Every node's bridge is on this machine, so the host routes between the pod subnets (the bridge plugin's
    ``isGateway`` turns on forwarding): pods reach the pods of other nodes, and the host reaches them all.
    Only the first node runs the cluster's kube-scheduler.
    """
    if not 2 <= number <= 9:
        raise ValueError(f"node number: {number} is not between 2 and 9")
    return Node(f"candor-{number}", f"cnd{number - 1}", f"10.244.{79 + number}.0/24", cluster=cluster,
                scheduler=False)


class Node:
    """One kubelet + containerd node. ``cluster`` is a started K8sCluster, or None for a standalone kubelet."""

    def __init__(self, name: str = "candor", bridge: str = "cnd0", subnet: str = "10.244.77.0/24",
                 cluster: Any = None, static_pods: Path | None = None, scheduler: bool = True) -> None:
        self.name = name
        self.scheduler = scheduler  # one kube-scheduler per cluster: the first node runs it
        self.bridge = bridge
        self.subnet = ipaddress.ip_network(subnet)
        self.ip = str(next(self.subnet.hosts()))
        self.cluster = cluster
        self.static_pods = static_pods
        self.work = STATE / name
        self.run_dir = Path("/run/candor-node") / name
        self.logs_dir = self.work / "logs"
        self.socket = self.run_dir / "containerd.sock"
        self.startup_seconds = 0.0
        self.images: list[BuiltImage] = []
        self._processes: list[ControlPlaneProcess] = []
        self._forwarder: ApiForwarder | None = None
        self._lock: IO[str] | None = None
        self.record: MachineRecord | None = None
        self.kubelet_port = 0

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> Node:
        began = time.monotonic()
        self._take_lock()
        restore(self.name)  # a crashed run's leftovers go first
        self.images = build_images()  # before anything changes: a build failure leaves the machine untouched
        self.record = MachineRecord.take(self.name, self.bridge, self.work, self.run_dir)
        try:
            for directory in (self.work, self.run_dir, self.logs_dir):
                directory.mkdir(parents=True, exist_ok=True)
            self._make_bridge()
            self._make_cgroups()
            self._start_containerd()
            self._import_images()
            if self.cluster is not None:
                self._route_api_server()
            self._start_kubelet()
            if self.cluster is not None:
                if self.scheduler:
                    self._start_scheduler()
                self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop(grace=5)
        self._processes.clear()
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None
        restore(self.name)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.api("DELETE", f"/api/v1/nodes/{self.name}")
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            (STATE / f"{self.name}.lock").unlink(missing_ok=True)  # still held: no other run can be inside
            self._lock.close()
            self._lock = None
            with contextlib.suppress(OSError):
                STATE.rmdir()  # only when no other node's files are left

    def _take_lock(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        self._lock = (STATE / f"{self.name}.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(f"another test run owns the node {self.name!r} ({STATE / self.name}.lock)") from None

    def _start(self, name: str, argv: list[str]) -> ControlPlaneProcess:
        process = ControlPlaneProcess(name, argv, self.logs_dir / f"{name}.log")
        self._processes.append(process)
        return process

    def check_alive(self) -> None:
        for process in self._processes:
            process.check_alive()

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_until(predicate, timeout, what, 0.2, check=self.check_alive, error=TimeoutError,
                          hint=f"logs in {self.logs_dir}")

    # ------------------------------------------------------------------------------------------- parts
    def _make_bridge(self) -> None:
        prefix = self.subnet.prefixlen
        for argv in (["ip", "link", "add", self.bridge, "type", "bridge"],
                     ["ip", "addr", "add", f"{self.ip}/{prefix}", "dev", self.bridge],
                     ["ip", "link", "set", self.bridge, "up"]):
            subprocess.run(argv, check=True, capture_output=True)

    def _make_cgroups(self) -> None:
        assert self.record is not None
        for hierarchy in cgroup_hierarchies():
            (hierarchy / self.record.cgroup.lstrip("/")).mkdir(exist_ok=True)

    def _start_containerd(self) -> None:
        net_d = self.work / "net.d"
        net_d.mkdir(exist_ok=True)
        (net_d / "10-candor.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": f"candor-{self.name}",
            "plugins": [{
                "type": "bridge", "bridge": self.bridge, "isGateway": True, "isDefaultGateway": True,
                # No masquerade: pods only talk to the host and each other; nothing leaves the machine.
                "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.work / "ipam"),
                         "ranges": [[{"subnet": str(self.subnet), "gateway": self.ip}]]},
            }],
        }))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{self.work / 'containerd'}"
state = "{self.run_dir / 'containerd'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.work / 'opt'}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{net_d}"
"""
        (self.work / "containerd.toml").write_text(config)
        self._start("containerd", ["containerd", "--config", str(self.work / "containerd.toml")])
        self.wait_until(lambda: self._ctr("version", check=False).returncode == 0, 30, "containerd answers")

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, check=check)

    def _import_images(self) -> None:
        for image in self.images:
            self._ctr("images", "import", "--no-unpack", str(image.archive))

    def _route_api_server(self) -> None:
        assert self.record is not None
        api_port = int(self.cluster.server.rsplit(":", 1)[1])
        forward_port = free_port()
        self._forwarder = ApiForwarder((self.ip, forward_port), ("127.0.0.1", api_port))
        chain = self.record.nat_chain
        for argv in (["-N", chain],
                     ["-A", chain, "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443", "-j", "DNAT",
                      "--to-destination", f"{self.ip}:{forward_port}"],
                     ["-I", "PREROUTING", "-i", self.bridge, "-j", chain]):
            subprocess.run(["iptables", "-w", "-t", "nat", *argv], check=True, capture_output=True)

    def _kubelet_certs(self, ca: CertificateAuthority) -> dict[str, str]:
        client = ca.issue(f"kubelet-{self.name}-client", f"system:node:{self.name}",
                          organizations=("system:nodes",), client=True)
        serving = ca.issue(f"kubelet-{self.name}-serving", self.name, ips=(self.ip,), server=True)
        return {"client-cert": str(client.cert_file), "client-key": str(client.key_file),
                "cert": str(serving.cert_file), "key": str(serving.key_file), "ca": str(ca.cert_file)}

    def _start_kubelet(self) -> None:
        ca = self.cluster.ca if self.cluster is not None else CertificateAuthority(self.work / "pki")
        certs = self._kubelet_certs(ca)
        assert self.record is not None
        self.kubelet_port = free_port()
        (self.work / "resolv.conf").write_text("# no nameserver: nothing a pod resolves may leave the machine\n")
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": self.ip, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": certs["ca"]}},
            # Only holders of a certificate from the cluster CA get past authentication: the API server.
            "authorization": {"mode": "AlwaysAllow"},
            "tlsCertFile": certs["cert"], "tlsPrivateKeyFile": certs["key"],
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.record.cgroup, "failCgroupV1": False,
            "failSwapOn": False, "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.work / "pod-logs"), "resolvConf": str(self.work / "resolv.conf"),
            # The host's disks are shared with other work: never evict test pods for the host's fill level.
            "evictionHard": {"memory.available": "1%", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "shutdownGracePeriod": "0s",
        }
        if self.static_pods is not None:
            config["staticPodPath"] = str(self.static_pods)
        (self.work / "kubelet.yaml").write_text(yaml.safe_dump(config))
        argv = [str(ensure_binaries() / "kubelet"), f"--config={self.work / 'kubelet.yaml'}",
                f"--root-dir={self.work / 'kubelet'}", f"--node-ip={self.ip}", f"--hostname-override={self.name}",
                "--v=1"]
        if self.cluster is not None:
            kubeconfig = self.work / "kubelet.kubeconfig"
            self._write_kubeconfig(kubeconfig, certs["client-cert"], certs["client-key"])
            argv.append(f"--kubeconfig={kubeconfig}")
            self.cluster.apply({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "candor-test-nodes"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
            })
        self._start("kubelet", argv)

    def _write_kubeconfig(self, path: Path, cert: str, key: str) -> None:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "c", "cluster": {"server": self.cluster.server,
                                                   "certificate-authority": str(self.cluster.ca_file)}}],
            "users": [{"name": "u", "user": {"client-certificate": cert, "client-key": key}}],
            "contexts": [{"name": "node", "context": {"cluster": "c", "user": "u"}}],
        }))

    def _start_scheduler(self) -> None:
        pair = self.cluster.ca.issue("scheduler", "system:kube-scheduler", organizations=("system:masters",),
                                     client=True)
        kubeconfig = self.work / "scheduler.kubeconfig"
        self._write_kubeconfig(kubeconfig, str(pair.cert_file), str(pair.key_file))
        self._start("kube-scheduler", [
            str(ensure_binaries() / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        ])

    def _wait_ready(self) -> None:
        def ready() -> bool:
            node = self.cluster.api("GET", f"/api/v1/nodes/{self.name}").body
            if node.get("kind") != "Node":
                return False
            conditions = node["status"].get("conditions", [])
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        self.wait_until(ready, READY_TIMEOUT, f"node {self.name} Ready")
        # Pods need their namespace's ServiceAccount and the scheduler needs to see the node: both async.
        self.wait_until(lambda: self.cluster.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                        .status == 200, 30, "ServiceAccount default/default")

    # ------------------------------------------------------------------------------------------- helpers
    def container_memory_usage(self, pod_uid: str, container_id: str) -> int:
        """Bytes a container uses, read from its cgroup on the node (v2 memory.current or v1 usage)."""
        assert self.record is not None
        for hierarchy in cgroup_hierarchies():
            base = hierarchy / self.record.cgroup.lstrip("/")
            for candidate in base.rglob(container_id):
                for name in ("memory.current", "memory.usage_in_bytes"):
                    if (candidate / name).exists():
                        return int((candidate / name).read_text())
        raise FileNotFoundError(f"no memory cgroup for container {container_id} of pod {pod_uid}")


def _serve(args: argparse.Namespace) -> None:
    node = Node(args.name, args.bridge, args.subnet, static_pods=args.static_pods)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node.start()
    print(json.dumps({"ready": True, "ip": node.ip, "seconds": round(node.startup_seconds, 1)}), flush=True)
    try:
        while not stop.wait(1):
            node.check_alive()
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.cluster.node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="a standalone kubelet (static pods only) until SIGTERM")
    serve.add_argument("--name", default="candor-standalone")
    serve.add_argument("--bridge", default="cnd9")
    serve.add_argument("--subnet", default="10.244.79.0/24")
    serve.add_argument("--static-pods", type=Path, default=None)
    again = commands.add_parser("restore", help="undo what a crashed node left on the machine")
    again.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args)
    else:
        # Under the node's lock, as Node.start does: never while a live run owns that node.
        node = Node(args.name)
        node._take_lock()
        try:
            print("restored" if restore(args.name) else "nothing to restore")
        finally:
            node._release_lock()


if __name__ == "__main__":
    main(sys.argv[1:])
