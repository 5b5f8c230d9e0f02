"""Candor's version is declared once (the root pyproject.toml) and read at run time from the installed
metadata (candor_sidecar.release); the files that cannot read it must agree.

A release bumps the pyproject's version and then every place this test names: the tracer's own wheel, the pins on it,
the chart, the example's and the documented image tags. A copy left behind would install a tracer the
sidecar does not match or run an image no build made.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from candor_sidecar.release import VERSION, NotInstalledError, installed_version
from harness.cluster.components import ROOT

# Files whose image tags and tracer pins are written out (Dockerfiles, manifests, docs, a test's manifest).
TAGGED_FILES = ("README.md", "docs/kubernetes.md", "examples/demo-app.yaml", "helm/candor/values.yaml",
                "operator/Dockerfile", "sidecar/Dockerfile", "pyproject.toml", "tests/integration/test_node_product.py")
# A written version starts with a digit (an f-string's `{VERSION}` is not a copy).
IMAGE_TAG = re.compile(r"\bcandor-(?:sidecar|operator):([0-9][^\s\"'`]*)")
TRACER_PIN = re.compile(r"\bcandor-tracer(?:\[[a-z]+\])?==([0-9][^\s\"']*)")


def test_the_running_code_reads_the_version_the_pyproject_declares() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        assert tomllib.load(file)["project"]["version"] == VERSION  # a stale install fails here: make venv


def test_the_version_comes_from_the_first_installed_distribution_on_the_path(tmp_path: Path) -> None:
    first, second, empty = tmp_path / "first", tmp_path / "second", tmp_path / "empty"
    for folder in (first / "candor-2.1.0.dist-info", first / "candor_tracer-9.9.dist-info",
                   second / "candor-1.0.0.dist-info", empty):
        folder.mkdir(parents=True)
    path = [str(tmp_path / "missing"), str(empty), str(first), str(second)]
    assert installed_version(path=path) == "2.1.0"
    assert installed_version("candor_tracer", path) == "9.9"
    with pytest.raises(NotInstalledError, match="'candor' distribution is not installed"):
        installed_version(path=[str(empty)])


def test_the_tracer_wheel_has_candors_version() -> None:
    with (ROOT / "tracer" / "pyproject.toml").open("rb") as file:
        assert tomllib.load(file)["project"]["version"] == VERSION


def test_the_chart_ships_candors_version() -> None:
    chart = yaml.safe_load((ROOT / "helm" / "candor" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)


@pytest.mark.parametrize("name", TAGGED_FILES)
def test_written_image_tags_and_tracer_pins_name_candors_version(name: str) -> None:
    text = (ROOT / name).read_text()
    found = IMAGE_TAG.findall(text) + TRACER_PIN.findall(text)
    assert found, f"{name} no longer names a Candor image or the tracer: drop it from TAGGED_FILES"
    assert set(found) == {VERSION}, f"{name}: {sorted(set(found))}, expected {VERSION}"


def test_the_operator_injects_the_sidecar_of_its_own_version() -> None:
    from candor_operator.injection import SidecarSettings

    assert SidecarSettings().image == f"candor-sidecar:{VERSION}"
