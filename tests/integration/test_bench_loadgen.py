"""bench/loadgen, the Go load process of bench/sidecar.py: it builds, keeps its rates and counts what it sees.

Not a timing test: it checks the instrument, never a latency.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.ports import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("go") is None, reason="bench/loadgen needs Go; the bench falls back")]

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    """bench/sidecar.py as a module, without putting bench/ on sys.path (bench/operator.py would shadow)."""
    spec = importlib.util.spec_from_file_location("candor_bench_sidecar", ROOT / "bench" / "sidecar.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sidecar_bench = _load_bench()


def test_the_go_load_process_measures_its_own_floor_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidecar_bench, "LOADGEN_CACHE", tmp_path)
    loadgen = sidecar_bench.build_go_loadgen()
    assert loadgen is not None and loadgen.parent == tmp_path
    assert sidecar_bench.build_go_loadgen() == loadgen  # cached: built once per source version
    agent, http = free_port(), free_port()
    server = subprocess.Popen([str(loadgen), "-serve-agent", f"127.0.0.1:{agent}", "-serve-http", f"127.0.0.1:{http}"])
    try:
        closed = free_port()  # nothing listens here: every connection is an error
        result = subprocess.run([str(loadgen), "-agent", f"127.0.0.1:{agent}", "-agent-rate", "200",
                                 "-health", f"127.0.0.1:{http}", "-health-rate", "50", "-seconds", "0.5"],
                                capture_output=True, text=True, timeout=60, check=True)
        refused = subprocess.run([str(loadgen), "-agent", f"127.0.0.1:{closed}", "-agent-rate", "20",
                                  "-seconds", "0.5"], capture_output=True, text=True, timeout=60, check=True)
    finally:
        server.kill()
        server.wait()
    figures = json.loads(result.stdout)
    assert (len(figures["agent"]["latencies_us"]), figures["agent"]["errors"]) == (100, 0)
    assert (len(figures["health"]["latencies_us"]), figures["health"]["errors"]) == (25, 0)
    assert 0.3 < figures["agent"]["seconds"] < 5
    assert json.loads(refused.stdout)["agent"] == {"latencies_us": [], "errors": 10,
                                                   "seconds": pytest.approx(0, abs=1e-6)}
