"""A real `checkov` for scanning the chart's manifests, in a virtualenv of its own outside the repository.

checkov pins dozens of libraries (boto3, networkx, …) that have no place in Candor's own environment, so
it gets a venv under `${CANDOR_CHECKOV_CACHE:-~/.cache/candor/checkov}/<version>`, made the first time
(a few minutes, from PyPI) and reused after. `$CANDOR_CHECKOV` names another binary instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSION = "3.3.30"


def _venv() -> Path:
    base = Path(os.environ.get("CANDOR_CHECKOV_CACHE", Path.home() / ".cache" / "candor" / "checkov"))
    return base / VERSION


def checkov_binary() -> Path:
    explicit = os.environ.get("CANDOR_CHECKOV")
    if explicit:
        return Path(explicit)
    venv = _venv()
    binary = venv / "bin" / "checkov"
    done = venv / ".installed"
    if done.exists():
        return binary
    venv.parent.mkdir(parents=True, exist_ok=True)
    # One installer at a time: parallel test processes wait for the first one's venv.
    with open(venv.parent / f".{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"checkov=={VERSION}"],
                           check=True, timeout=1800)
            done.touch()
    return binary


def scan(directory: Path) -> dict[str, Any]:
    """checkov's Kubernetes checks over every YAML file in `directory`: its JSON report (one framework)."""
    result = subprocess.run(
        [str(checkov_binary()), "--quiet", "--compact", "--framework", "kubernetes", "--output", "json",
         "--skip-download", "--directory", str(directory)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    # checkov exits 1 when a check fails: the report says which; anything else is checkov failing.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "kubernetes"]
    return report if isinstance(report, dict) else {}
