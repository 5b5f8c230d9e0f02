"""Both distributions build from this repository, and candor-tracer works alone.

The tracer's wheel (tracer/pyproject.toml) goes into a fresh venv with nothing but prometheus_client, from
a local wheel directory (--no-index: no index is reached; `make venv` fetched prometheus_client's wheel).
There a traced job runs in journal mode and its journal reads back; the sidecar's and operator's
dependencies (click, PyYAML, kopf, aiohttp, h11) are absent and never needed. The `candor` wheel holds
everything but the tracer and depends on it at the same version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from candor_sidecar.release import VERSION
from candor_tracer.journal.reader import read_totals

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # filled by `make venv`
FRAMEWORKS = {"celery", "kombu", "rq", "redis", "gunicorn"}  # the extras: absent unless an app has them
NOT_FOR_APPS = ["click", "yaml", "kopf", "aiohttp", "h11", "candor_sidecar", "candor_operator", "candor_cli"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".mypy_cache")

JOB = """
import json, os, sys, time
from prometheus_client import REGISTRY, Counter, generate_latest
from candor_tracer import default_tracer, trace

JOB_SECONDS = Counter("job_worked_seconds_total", "Seconds spent on jobs", ["job"])
with trace(JOB_SECONDS, job="wheel"):
    time.sleep(0.3)
    scraped = REGISTRY.get_sample_value("job_worked_seconds_total", {"job": "wheel"})
default_tracer.close()
from candor_tracer.journal.reader import read_totals
[series] = read_totals(os.environ["CANDOR_STATE_DIR"]).series
print(json.dumps({"in_flight_scrape": scraped, "journal": series.value,
                  "counter": REGISTRY.get_sample_value("job_worked_seconds_total", {"job": "wheel"})}))
"""

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import candor_tracer
missing = {}
for info in pkgutil.walk_packages(candor_tracer.__path__, "candor_tracer."):
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as exc:
        missing[info.name] = exc.name
print(json.dumps({"missing": missing, "loaded": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` of a copy of `source`, offline (this venv's setuptools, no dependencies)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True, text=True)
    [wheel] = out.glob("*.whl")
    return wheel


def metadata(wheel: Path) -> tuple[list[str], list[str]]:
    """(files, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    return names, requires


def test_the_tracer_wheel_alone_runs_a_traced_job_in_a_clean_venv(tmp_path: Path) -> None:
    assert list(WHEELHOUSE.glob("prometheus_client-*.whl")), f"no prometheus_client wheel in {WHEELHOUSE}: make venv"
    source = tmp_path / "src"
    shutil.copytree(ROOT / "tracer", source, ignore=IGNORE)
    wheel = build_wheel(source, tmp_path / "wheels")
    assert wheel.name == f"candor_tracer-{VERSION}-py3-none-any.whl"
    names, requires = metadata(wheel)
    assert {n.split("/")[0] for n in names} == {"candor_tracer", f"candor_tracer-{VERSION}.dist-info"}
    assert "candor_tracer/py.typed" in names and "candor_tracer/journal/reader.py" in names
    assert [r for r in requires if "extra ==" not in r] == ["prometheus-client>=0.20"]

    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=True, clear=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheel.parent),
                    "--find-links", str(WHEELHOUSE), "candor-tracer"], check=True, capture_output=True, text=True)
    installed = subprocess.run([python, "-m", "pip", "list", "--format=json"], check=True, capture_output=True,
                               text=True).stdout
    assert {p["name"].lower().replace("_", "-") for p in json.loads(installed)} <= {
        "candor-tracer", "prometheus-client", "pip", "setuptools"}

    clean_env = {"PATH": "/usr/bin:/bin", "CANDOR_STATE_DIR": str(tmp_path / "state")}
    imported = json.loads(subprocess.run([python, "-I", "-c", IMPORT_EVERY_MODULE], check=True, capture_output=True,
                                         text=True, env=clean_env, cwd=tmp_path).stdout)
    assert set(imported["missing"].values()) <= FRAMEWORKS, imported["missing"]
    assert not set(NOT_FOR_APPS) & set(imported["loaded"])
    for module in NOT_FOR_APPS:  # not merely unused: not there at all
        probe = subprocess.run([python, "-I", "-c", f"import {module}"], capture_output=True, env=clean_env,
                               cwd=tmp_path)
        assert probe.returncode != 0, f"{module} is importable in the clean venv"

    job = json.loads(subprocess.run([python, "-I", "-c", JOB], check=True, capture_output=True, text=True,
                                    env=clean_env, cwd=tmp_path).stdout)
    assert job["in_flight_scrape"] > 0.25  # counted while the job ran
    assert 0.3 <= job["counter"] < 2.0 and 0.3 <= job["journal"] < 2.0
    [series] = read_totals(tmp_path / "state").series  # this repository's reader reads the wheel's journal
    assert series.labels == (("job", "wheel"),) and series.value == pytest.approx(job["journal"], abs=1e-6)


def test_the_candor_wheel_depends_on_the_tracer_wheel_and_does_not_carry_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for folder in project["tool"]["setuptools"]["packages"]["find"]["where"]:
        shutil.copytree(ROOT / folder, source / folder, ignore=IGNORE)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    names, requires = metadata(build_wheel(source, tmp_path / "wheels"))
    assert not [n for n in names if n.startswith("candor_tracer/")]
    assert {"candor_sidecar", "candor_operator", "candor_cli"} <= {n.split("/")[0] for n in names}
    tracer_version = tomllib.loads((ROOT / "tracer" / "pyproject.toml").read_text())["project"]["version"]
    assert f"candor-tracer=={tracer_version}" in requires
