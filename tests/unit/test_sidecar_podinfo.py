"""Annotations from a downwardAPI volume, including the kubelet's atomic symlink swap."""

from __future__ import annotations

import os
from pathlib import Path

from candor_sidecar.podinfo import maintenance_requested, parse_annotations, read_annotations


def test_downward_api_lines_are_unquoted() -> None:
    text = 'candor.io/maintenance="true"\nkubernetes.io/config.seen="2026-11-22T07:00:00Z"\nmulti="a\\nb \\"q\\""\n'
    annotations = parse_annotations(text)
    assert annotations["candor.io/maintenance"] == "true"
    assert annotations["multi"] == 'a\nb "q"'
    assert maintenance_requested(annotations)
    assert not maintenance_requested({"candor.io/maintenance": "false"})
    assert not maintenance_requested({})


def _publish(root: Path, version: str, text: str) -> None:
    """What the kubelet does: write a new timestamped dir, then swap the ..data symlink atomically."""
    target = root / version
    target.mkdir()
    (target / "annotations").write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(version)
    os.replace(tmp, root / "..data")
    if not (root / "annotations").exists():
        (root / "annotations").symlink_to("..data/annotations")


def test_a_live_symlink_swap_is_seen_on_the_next_read(tmp_path: Path) -> None:
    assert read_annotations(str(tmp_path)) == {}
    _publish(tmp_path, "..2026_1", 'candor.io/maintenance="true"\n')
    assert maintenance_requested(read_annotations(str(tmp_path)))
    _publish(tmp_path, "..2026_2", 'other="x"\n')
    assert not maintenance_requested(read_annotations(str(tmp_path)))
    assert read_annotations(None) == {}
