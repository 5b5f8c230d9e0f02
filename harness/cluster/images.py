"""Container images for the test node, built here from the project's own Dockerfiles with no registry.

* The base: a Debian 12 root filesystem made by ``mmdebstrap`` (python3 is 3.11 there), tagged
  ``docker.io/library/python:3.11-slim`` in a private buildah store, so the Dockerfiles' ``FROM`` lines
  resolve to it unchanged and ``docker build`` with the real base stays true. Debian marks its Python
  EXTERNALLY-MANAGED (PEP 668); the marker is deleted in the base, as the official image never has one.
* The Dockerfiles: ``buildah bud --pull=never --isolation=chroot --network=host`` (``pip wheel`` reaches PyPI).
  buildah reads a ``containers.conf`` of its own in the cache: by default it creates lock files in the
  machine's ``/etc/cni/net.d`` and ``/etc/containers/networks`` at every ``from`` and ``bud``, and a fresh
  machine has neither directory (tests/integration/test_node_cni_state.py).
* The pause image: a tiny static C program (it sleeps until a signal ends it), one file in an empty image.

Every image is cached as a docker-archive under ``~/.cache/candor/images`` named by a content hash (the
Dockerfile, every file its COPY lines take, and the base's hash), so a re-run only imports them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from candor_sidecar.release import VERSION
from harness.cluster.components import ROOT

CACHE = Path(os.environ.get("CANDOR_IMAGE_CACHE", Path.home() / ".cache" / "candor" / "images"))
BASE_TAG = "docker.io/library/python:3.11-slim"
PAUSE_IMAGE = "docker.io/candor/pause:1"
SIDECAR_IMAGE = f"docker.io/library/candor-sidecar:{VERSION}"
OPERATOR_IMAGE = f"docker.io/library/candor-operator:{VERSION}"
# Packages of the base: python3 (not -minimal: it lacks http and json), pip and venv for the Dockerfiles'
# pip steps, passwd for useradd, ca-certificates so pip can reach PyPI over TLS.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "passwd", "ca-certificates")
SUITE = "bookworm"

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    for (;;) pause();
}
"""


@dataclass(frozen=True)
class BuiltImage:
    """An image as a docker-archive file, ready for ``ctr images import``."""

    name: str
    archive: Path
    built_seconds: float  # 0.0 when it came from the cache


def _run(argv: list[str], what: str, **kwargs: object) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({shlex.join(argv)}):\n{result.stderr[-4000:]}{result.stdout[-2000:]}")
    return str(result.stdout)


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    # Two test runs building the same image at once would race on the archive and the buildah store.
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _containers_conf(store: Path) -> Path:
    """buildah's network settings, pointing its CNI lock and configuration into the store, not into /etc."""
    conf = store / "containers.conf"
    text = f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{store / "net.d"}"\n'
    if not conf.exists() or conf.read_text() != text:
        store.mkdir(parents=True, exist_ok=True)
        conf.write_text(text)
    return conf


def _buildah(*args: str) -> list[str]:
    store = CACHE / "buildah"
    # CONTAINERS_CONF replaces the machine's containers.conf files whole, for every buildah command.
    return ["nice", "env", f"CONTAINERS_CONF={_containers_conf(store)}", "buildah", f"--root={store / 'root'}",
            f"--runroot={store / 'run'}", "--storage-driver=vfs", *args]


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def _ignored(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc" or any(p.endswith(".egg-info") for p in path.parts)


def dockerfile_sources(dockerfile: Path, context: Path = ROOT) -> list[Path]:
    """Every file the Dockerfile's COPY lines take from the build context (not from other stages)."""
    files: list[Path] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words[1:] if not w.startswith("--")][:-1]:
            path = context / source
            found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            files += [p for p in found if not _ignored(p.relative_to(context))]
    return files


def _pause_archive() -> BuiltImage:
    key = _digest(PAUSE_C.encode(), PAUSE_IMAGE.encode())
    archive = CACHE / f"pause-{key}.tar"
    if archive.exists():
        return BuiltImage(PAUSE_IMAGE, archive, 0.0)
    began = time.monotonic()
    work = CACHE / f"pause-{key}.work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(PAUSE_C)
    _run(["gcc", "-static", "-Os", "-s", "-o", str(work / "pause"), str(work / "pause.c")], "compiling pause")
    container = _run(_buildah("from", "scratch"), "buildah from scratch").strip()
    try:
        _run(_buildah("copy", container, str(work / "pause"), "/pause"), "buildah copy pause")
        _run(_buildah("config", "--entrypoint", '["/pause"]', "--cmd", "", container), "buildah config pause")
        _run(_buildah("commit", container, PAUSE_IMAGE), "buildah commit pause")
    finally:
        _run(_buildah("rm", container), "buildah rm")
    _push(PAUSE_IMAGE, archive)
    return BuiltImage(PAUSE_IMAGE, archive, time.monotonic() - began)


def _push(image: str, archive: Path) -> None:
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run(_buildah("push", image, f"docker-archive:{partial}:{image}"), f"buildah push {image}")
    partial.rename(archive)


# The machine's trusted CAs go into the base, as they would into any site's base image: where PyPI is
# reached through a TLS-inspecting proxy, the Dockerfiles' `pip wheel` must trust what the host trusts.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def base_key() -> str:
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
    return _digest(SUITE.encode(), " ".join(BASE_PACKAGES).encode(), b"no-externally-managed", b"python", ca)


def _ensure_base() -> str:
    """The mmdebstrap base under the python:3.11-slim tag in the buildah store; returns its key."""
    key = base_key()
    stamp = CACHE / f"base-{key}.done"
    if stamp.exists():
        return key
    tarball = CACHE / f"base-{key}.tar"
    _run([
        "nice", "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        # PEP 668: Debian's marker would make every `pip install` in the Dockerfiles refuse to run.
        "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
        "--customize-hook=rm -rf \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/lib/apt/lists/*",
        # The official image's names: `python` and `pip` (Debian installs python3 and pip3 only).
        "--customize-hook=ln -sf pip3 \"$1\"/usr/bin/pip",
        "--customize-hook=ln -sf python3 \"$1\"/usr/bin/python",
        *([f"--customize-hook=copy-in {HOST_CA_BUNDLE} /etc/ssl/certs"] if HOST_CA_BUNDLE.exists() else []),
        SUITE, str(tarball),
    ], "mmdebstrap")
    container = _run(_buildah("from", "scratch"), "buildah from scratch").strip()
    try:
        _run(_buildah("add", container, str(tarball), "/"), "buildah add base")
        _run(_buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', container), "buildah config base")
        _run(_buildah("commit", container, BASE_TAG), "buildah commit base")
    finally:
        _run(_buildah("rm", container), "buildah rm")
    tarball.unlink()
    stamp.write_text(BASE_TAG + "\n")
    return key


def _dockerfile_archive(name: str, dockerfile: Path, base: str) -> BuiltImage:
    parts = [dockerfile.read_bytes(), base.encode(), name.encode()]
    for path in dockerfile_sources(dockerfile):
        parts += [str(path.relative_to(ROOT)).encode(), path.read_bytes()]
    archive = CACHE / f"{name.rsplit('/', 1)[-1].replace(':', '-')}-{_digest(*parts)}.tar"
    if archive.exists():
        return BuiltImage(name, archive, 0.0)
    began = time.monotonic()
    _run(_buildah("bud", "--pull=never", "--isolation=chroot", "--network=host", "--layers=false",
                  "-f", str(dockerfile), "-t", name, str(ROOT)), f"buildah bud {dockerfile}")
    _push(name, archive)
    # One archive per image in the cache, and no untagged layers of earlier builds in the store.
    for older in CACHE.glob(archive.name.rsplit("-", 1)[0] + "-*.tar"):
        if older != archive:
            older.unlink()
    _run(_buildah("rmi", "--prune"), "buildah rmi --prune")
    return BuiltImage(name, archive, time.monotonic() - began)


def build_images() -> list[BuiltImage]:
    """The pause, sidecar and operator images as docker-archives, built only when their content changed."""
    with _cache_lock():
        pause = _pause_archive()
        base = _ensure_base()
        return [
            pause,
            _dockerfile_archive(SIDECAR_IMAGE, ROOT / "sidecar" / "Dockerfile", base),
            _dockerfile_archive(OPERATOR_IMAGE, ROOT / "operator" / "Dockerfile", base),
        ]


def build_dockerfile(name: str, dockerfile: Path) -> BuiltImage:
    """One more image from ``dockerfile`` (context: the repository), built like the project's own."""
    with _cache_lock():
        return _dockerfile_archive(name, dockerfile, _ensure_base())


if __name__ == "__main__":
    for image in build_images():
        print(f"{image.name}  {image.archive}  built in {image.built_seconds:.1f} s")
