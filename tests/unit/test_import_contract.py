"""The architecture as import-linter contracts (pyproject.toml): layers cli -> demo -> operator -> sidecar ->
tracer, and a tracer that imports nothing but the stdlib and prometheus_client. The tree keeps them, and a
copy of the tree with one wrong import breaks them, naming the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SOURCE_DIRS = ("tracer", "sidecar", "operator", "demo", "cli")  # the folders holding the candor_* packages


def _lint(python_path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(path) for path in python_path)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_tree_keeps_its_import_contracts() -> None:
    result = _lint([ROOT])  # ROOT: the contract type in harness/lint
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("candor_tracer/series.py", "import candor_sidecar.config", ["Dependencies point one way", "The tracer imports"]),
    ("candor_tracer/series.py", "import yaml", ["The tracer imports"]),
    ("candor_sidecar/agent.py", "from candor_operator import policy", ["Dependencies point one way"]),
    ("candor_operator/render.py", "import candor_demo.policy", ["Dependencies point one way"]),
], ids=["tracer-imports-sidecar", "tracer-imports-yaml", "sidecar-imports-operator", "operator-imports-demo"])
def test_one_wrong_import_breaks_the_contract_that_forbids_it(tmp_path: Path, module: str, line: str,
                                                              broken: list[str]) -> None:
    copies = []
    for folder in SOURCE_DIRS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"))
        copies.append(tmp_path / folder)
    target = next(copy / module for copy in copies if (copy / module).exists())
    target.write_text(target.read_text() + f"\n{line}  # a wrong import planted by the test\n")
    result = _lint([*copies, ROOT])  # the copies come first on the path, before the installed tree
    assert result.returncode == 1, result.stdout + result.stderr
    summary = {name: ("BROKEN" in text) for name in ("Dependencies point one way", "The tracer imports")
               for text in [next(t for t in result.stdout.splitlines() if t.startswith(name))]}
    assert [name for name, is_broken in summary.items() if is_broken] == broken, result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout, result.stdout  # the importer is named
