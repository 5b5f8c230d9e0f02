"""A real redis-server (from Debian) on 127.0.0.1 and a free port: the broker of the job-framework tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from harness.processes.ports import free_port
from harness.processes.waiting import wait_until


def redis_binary() -> str:
    debian = Path("/usr/bin/redis-server")
    found = shutil.which("redis-server") or (str(debian) if debian.exists() else None)
    if found is None:
        raise RuntimeError("redis-server is missing: run `make system-deps` (it installs Debian's redis-server)")
    return found


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run redis-server without persistence in `workdir`; yields its URL, redis://127.0.0.1:PORT/0."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no", "--logfile", str(workdir / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited {process.returncode}: "
                                   f"{(workdir / 'redis.log').read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(redis.ConnectionError):
                return bool(client.ping())
            return False

        wait_until(answering, timeout=20, what="redis-server to answer PING")
        yield url
    finally:
        client.close()
        process.kill()
        process.wait(timeout=10)
