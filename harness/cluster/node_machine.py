"""What the test node changes on the machine, written down before it changes it, and undone from that record.

The node (harness/cluster/node.py) touches things outside its work directory: sysctls the kubelet and the
bridge plugin set, an interface, a cgroup subtree in every hierarchy, iptables chains (its own DNAT, and the
kubelet's KUBE-FIREWALL and canaries in IPv4 and IPv6), and files in fixed paths
(shim sockets in /run/containerd, the CNI result cache in /var/lib/cni, /var/log/containers,
/var/lib/kubelet/device-plugins). Before it touches any of them, a :class:`MachineRecord` is written to
disk; :func:`restore` undoes everything from that record alone, so it works the same after a clean stop and
after the test run was SIGKILLed (the next run finds the record and restores first).

:func:`machine_snapshot` is what "the machine as it was" means in the test that proves this.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Sysctls the kubelet (protectKernelDefaults: false) and the bridge plugin (isGateway) set.
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")
# Fixed paths the kubelet, containerd and CNI use whatever their configured directories. The node's CNI
# configuration lives in its work directory and buildah's in the image cache: /etc/cni and
# /etc/containers/networks are listed so that a write there is seen (and undone), not because one is expected.
FIXED_PATHS = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/lib/kubelet", "/run/netns",
               "/etc/cni", "/etc/cni/net.d", "/etc/containers/networks")
CGROUP_ROOT = Path("/sys/fs/cgroup")
STATE = Path("/var/lib/candor-node")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _listing(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one, and a v2 unified mount)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        mount_point = left.split()[4]
        if fstype in ("cgroup", "cgroup2") and mount_point.startswith(str(CGROUP_ROOT)):
            found.append(Path(mount_point))
    return sorted(set(found))


@dataclass
class MachineRecord:
    """The machine's state before the node named ``name`` changed it."""

    name: str
    bridge: str
    nat_chain: str
    cgroup: str  # the kubelet's cgroupRoot, created in every hierarchy
    work_dir: str
    run_dir: str
    sysctls: dict[str, str] = field(default_factory=dict)
    # tool -> table -> chains + rules; None when the tool could not list them (never read as "no rules")
    iptables: dict[str, dict[str, list[str]] | None] = field(default_factory=dict)
    fixed_paths: dict[str, list[str] | None] = field(default_factory=dict)
    mount_points: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return STATE / f"{self.name}.record.json"

    @classmethod
    def take(cls, name: str, bridge: str, work_dir: Path, run_dir: Path) -> MachineRecord:
        record = cls(
            name=name, bridge=bridge, nat_chain=f"CANDOR-{name.upper()}"[:28], cgroup=f"/candor-{name}",
            work_dir=str(work_dir), run_dir=str(run_dir),
            sysctls={key: _sysctl_path(key).read_text().strip() for key in SYSCTLS},
            fixed_paths={path: _listing(path) for path in FIXED_PATHS},
            iptables={tool: _tables(tool) for tool in IPTABLES},
            mount_points=_mount_points(),
        )
        STATE.mkdir(parents=True, exist_ok=True)
        partial = record.path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(record), indent=1))
        partial.rename(record.path)  # a record is either whole or absent
        return record

    @classmethod
    def load(cls, name: str) -> MachineRecord | None:
        path = STATE / f"{name}.record.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None


IPTABLES = ("iptables", "ip6tables")


def _tables(tool: str) -> dict[str, list[str]] | None:
    """Each table's chains (`:NAME`) and rules (`-A ...`), without counters: what the node may add.

    A fresh machine has no table at all (``{}``); None means the tool failed, and then nothing is known.
    """
    try:
        result = subprocess.run([f"{tool}-save"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    if result.returncode != 0:
        return None
    tables: dict[str, list[str]] = {}
    table = ""
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = []
        elif line.startswith(":"):
            tables[table].append(line.split()[0])
        elif line.startswith("-A"):
            tables[table].append(line)
    return tables


# The nftables family each iptables-nft tool keeps its tables in.
NFT_FAMILY = {"iptables": "ip", "ip6tables": "ip6"}


def _restore_iptables(record: MachineRecord) -> None:
    """Delete the rules, then the chains, that were not there before (jumps first, or a chain is in use).

    On a fresh machine the kubelet is what creates the tables themselves (its KUBE-FIREWALL and canaries):
    a table that did not exist before is deleted whole, so ``iptables-save`` prints what it printed before.
    """
    for tool in IPTABLES:
        before = record.iptables.get(tool)
        now = _tables(tool)
        if before is None or now is None:
            continue  # not recorded or unreadable: never treat every rule as new
        deletable = _is_nft(tool)
        for table, lines in now.items():
            if table not in before and deletable:
                subprocess.run(["nft", "delete", "table", NFT_FAMILY[tool], table], capture_output=True, check=False)
                continue
            known = set(before.get(table, []))
            for line in lines:
                if line.startswith("-A") and line not in known:
                    subprocess.run([tool, "-w", "-t", table, "-D", *shlex.split(line)[1:]], capture_output=True,
                                   check=False)
            for line in lines:
                if line.startswith(":") and line not in known:
                    for verb in ("-F", "-X"):
                        subprocess.run([tool, "-w", "-t", table, verb, line[1:]], capture_output=True, check=False)


def _is_nft(tool: str) -> bool:
    """iptables-nft's tables can be deleted (``nft delete table``); a legacy kernel table cannot."""
    result = subprocess.run([tool, "-V"], capture_output=True, text=True, check=False)
    return "nf_tables" in result.stdout


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def _processes_in(cgroup_dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs:
        for directory, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
    return pids


def _processes_mentioning(text: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
    return found


def _kill_all(pids_of: list[tuple[str, object]]) -> None:
    """SIGKILL until nothing is left: containers in the node's cgroups, shims, containerd, kubelet."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids: set[int] = set()
        for kind, what in pids_of:
            pids |= _processes_in(what) if kind == "cgroups" else _processes_mentioning(str(what))  # type: ignore[arg-type]
        pids.discard(os.getpid())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise RuntimeError(f"processes of the test node survived SIGKILL: {sorted(pids)}")


def _unmount_new(record: MachineRecord) -> None:
    # Deepest first; a lazy unmount for anything still busy (a netns a dying shim still holds).
    before = set(record.mount_points)
    for _ in range(5):
        new = [m for m in _mount_points() if m not in before]
        if not new:
            return
        for point in sorted(set(new), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = [m for m in _mount_points() if m not in before]
    if left:
        raise RuntimeError(f"mounts of the test node could not be removed: {left}")


def _remove_cgroups(record: MachineRecord) -> None:
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / record.cgroup.lstrip("/")
        if not top.exists():
            continue
        # rmdir depth-first: a cgroup directory can only be removed when it has no children.
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: len(entry[0]), reverse=True):
            for _ in range(50):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)  # the kernel frees a cgroup shortly after its last task is reaped


def _restore_fixed_paths(record: MachineRecord) -> None:
    for path, entries in record.fixed_paths.items():
        if entries is None:
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
            continue
        for entry in set(_listing(path) or []) - set(entries):
            target = Path(path) / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)


def restore(name: str) -> bool:
    """Undo everything the node ``name`` did, from its record. Returns False when there was no record."""
    record = MachineRecord.load(name)
    if record is None:
        return False
    cgroups = [h / record.cgroup.lstrip("/") for h in cgroup_hierarchies()]
    # A trailing slash: node "candor" must not match the paths of node "candor-crash".
    _kill_all([("cgroups", cgroups), ("cmdline", record.run_dir + "/"), ("cmdline", record.work_dir + "/")])
    _unmount_new(record)
    _remove_cgroups(record)
    _restore_iptables(record)
    subprocess.run(["ip", "link", "del", record.bridge], capture_output=True, check=False)
    for key, value in record.sysctls.items():
        _sysctl_path(key).write_text(value)
    _restore_fixed_paths(record)
    for directory in (record.work_dir, record.run_dir):
        shutil.rmtree(directory, ignore_errors=True)
    record.path.unlink()
    # Their parents (/run/candor-node, the state folder) go too once no other node uses them: a machine
    # that had neither before the first node must have neither after the last.
    for parent in {Path(record.work_dir).parent, Path(record.run_dir).parent}:
        with contextlib.suppress(OSError):  # another node's folders (or its lock) are still there
            parent.rmdir()
    return True


def machine_snapshot() -> dict[str, object]:
    """What a test run must leave as it found it: interfaces, mounts, sysctls, cgroups, iptables, paths."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()),
        "mounts": sorted(_mount_points()),
        "sysctls": {key: _sysctl_path(key).read_text().strip() for key in SYSCTLS},
        "cgroups": {str(h): _listing(str(h)) for h in cgroup_hierarchies()},
        "iptables": {tool: {table: sorted(lines) for table, lines in (_tables(tool) or {}).items()}
                     for tool in IPTABLES},
        "paths": {path: _listing(path) for path in (*FIXED_PATHS, str(STATE))},
    }
