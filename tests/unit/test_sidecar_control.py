"""The control socket on a real unix socket: one command, one line back; refusals name the problem."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest

from candor_sidecar.control import ControlError, ControlServer, send_command


async def _serve(path: Path, calls: list[str]) -> ControlServer:
    server = ControlServer(str(path), {"drain": lambda: calls.append("drain") or "draining"})
    await server.start()
    return server


async def test_a_command_is_answered_and_the_socket_is_private(tmp_path: Path) -> None:
    path = tmp_path / "ctl" / "sidecar.sock"
    path.parent.mkdir()
    path.write_text("left by the sidecar before this one")  # a stale file in the reused directory
    calls: list[str] = []
    server = await _serve(path, calls)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await asyncio.to_thread(send_command, str(path), "drain") == "draining"
        assert calls == ["drain"]
        with pytest.raises(ControlError, match="unknown command 'lift'; known: drain"):
            await asyncio.to_thread(send_command, str(path), "lift")
        assert calls == ["drain"]
    finally:
        server.close()
    assert not path.exists()  # closing removes it


async def test_a_line_too_long_is_refused_without_running_anything(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.sock"
    calls: list[str] = []
    server = await _serve(path, calls)

    def send_garbage() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(b"d" * 200)
            return sock.recv(1024)

    try:
        assert (await asyncio.to_thread(send_garbage)).startswith(b"refused: command too long")
        assert calls == []
    finally:
        server.close()


def test_no_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"no control socket at .*: is the sidecar running in this container\?"):
        send_command(str(tmp_path / "missing.sock"), "drain")


def test_the_drain_hook_loads_neither_asyncio_nor_the_tracer_nor_the_sidecar_config(tmp_path: Path) -> None:
    """The preStop hook runs in the sidecar's cgroup (a few millicores) at every pod's termination and the
    app's SIGTERM waits for it: `candor sidecar drain --control-socket PATH` imports the stdlib's socket alone."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "sys.argv = ['candor', 'sidecar', 'drain', '--control-socket', sys.argv[1]]\n"
             "from candor_cli.main import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "missing.sock")], capture_output=True,
                          text=True, timeout=60, check=True)
    assert "no control socket at" in done.stderr  # it did run the hook
    loaded = set(done.stdout.split())
    assert not loaded & {"asyncio", "candor_tracer", "candor_sidecar.config", "yaml", "click"}, sorted(loaded)
