"""The sidecar's run-time imports stay light: prometheus_client (with the http.server, urllib and ssl
it loads), OpenSSL and importlib.metadata (with email and zipfile) are never imported by the modules a
running sidecar uses."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
from candor_sidecar.no_openssl import keep_openssl_out
keep_openssl_out()
import asyncio, hashlib
import candor_sidecar.cli
import candor_sidecar.service, candor_sidecar.metrics, candor_sidecar.logs
from candor_tracer.journal.reader import read_totals, read_writers
hashlib.sha256(b"still works, from the built-in implementation")
print(json.dumps(sorted(name for name in ("prometheus_client", "http.server", "urllib.request", "wsgiref", "click",
                                          "ssl", "_hashlib", "_ssl", "importlib.metadata", "email", "zipfile")
                        if sys.modules.get(name) is not None)))
"""


def test_the_running_sidecar_imports_no_prometheus_client_click_or_openssl() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_tracer_for_apps_still_brings_prometheus_client() -> None:
    script = "import sys\nfrom candor_tracer import trace\nprint('prometheus_client' in sys.modules, callable(trace))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.split() == ["True", "True"], result.stderr
