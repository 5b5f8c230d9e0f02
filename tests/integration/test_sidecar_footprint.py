"""What a running sidecar has loaded: no OpenSSL and no prometheus_client, which together would cost
every pod about a third of the sidecar's memory (the figures are bench/sidecar.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.processes.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration


def test_a_serving_sidecar_maps_no_openssl_library(tmp_path: Path) -> None:
    with SidecarProcess(tmp_path / "state") as sidecar:
        assert sidecar.get("/metrics")[0] == 200 and sidecar.get("/health")[0] in (200, 503)
        assert sidecar.agent_line().startswith(("up ", "ready up "))
        maps = Path(f"/proc/{sidecar.pid}/maps").read_text()
    assert "libssl" not in maps and "libcrypto" not in maps
