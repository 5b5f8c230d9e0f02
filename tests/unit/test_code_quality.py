"""ruff and mypy --strict are part of the test suite, so CI fails on a type or lint error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "tracer/candor_tracer",
    "sidecar/candor_sidecar",
    "operator/candor_operator",
    "demo/candor_demo",
    "cli/candor_cli",
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_the_packages() -> None:
    result = _run("mypy", "--strict", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_folder_never_shadows_the_stdlib_module() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    import operator

    assert hasattr(operator, "itemgetter")
