"""The sidecar config reference page is rendered from the config's one declaration and cannot go stale."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from candor_sidecar import config_reference
from candor_sidecar.config import SidecarConfig, parse_config
from candor_sidecar.config_fields import Below, Duration, Percent, Rule, declared, key, read_section
from candor_sidecar.field_error import FieldError

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_page_is_a_fresh_render() -> None:
    committed = (ROOT / config_reference.PAGE).read_text()
    assert committed == config_reference.render(), (
        f"{config_reference.PAGE} is stale: the sidecar config's declaration changed; run `make reference`")


def _file_keys(model: type, prefix: str = "") -> list[str]:
    names = []
    for item in declared(model):
        kind = item.spec.kind
        names.append(prefix + item.name)
        if hasattr(kind, "model"):
            names += _file_keys(kind.model, f"{prefix}{item.name}.")
    return names


def test_every_key_and_flag_has_a_row_with_a_description() -> None:
    page = config_reference.render()
    rows = {match[0]: match[1] for match in re.findall(r"^\| `([^`]+)` \|.*\| ([^|]+) \|$", page, re.M)}
    sections = {name for name in _file_keys(SidecarConfig) if f"## `{name}`" in page}
    leaves = [name for name in _file_keys(SidecarConfig) if name not in sections]
    flags = [item.name for item in declared(SidecarConfig, flags=True)]
    assert sorted(rows) == sorted(leaves + flags)
    assert all(len(description.strip()) > 20 for description in rows.values()), rows
    assert {"loadWeight", "drain", "deadlock", "http", "agent"} <= sections


def test_the_pages_example_file_is_the_defaults() -> None:
    page = config_reference.render()
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert parse_config(yaml.safe_load(example)) == SidecarConfig()


@dataclass(frozen=True)
class _Probe:
    """A section declared as candor_sidecar.config declares one, to show what one declaration gives."""

    share: float = key(Percent(), 40.0, "How much to share.")
    pause: float = key(Duration(0.1, 60.0), 1.0, "How long to pause.")

    RULES: ClassVar[tuple[Rule, ...]] = (Below("share", 50, "half is the most"),)


def test_a_new_key_reaches_the_reader_the_defaults_and_the_page_from_its_one_declaration() -> None:
    assert read_section(_Probe, None, "probe", _Probe()) == _Probe()
    assert read_section(_Probe, {"pause": "500ms"}, "probe", _Probe()) == _Probe(pause=0.5)
    with pytest.raises(FieldError) as unknown:
        read_section(_Probe, {"paws": "1s"}, "probe", _Probe())
    assert str(unknown.value) == "probe.paws: unknown key; allowed here: share, pause"
    with pytest.raises(FieldError) as bad:
        read_section(_Probe, {"share": 60}, "probe", _Probe())
    assert str(bad.value) == "probe.share: must be below 50 (half is the most), got 60"
    rows = list(config_reference._sections(_Probe, _Probe(), "probe."))
    assert rows == ["| key | type | default | bounds | description |\n|---|---|---|---|---|\n"
                    "| `probe.share` | number (%) | `40` | above 0, at most 100 | How much to share. It must be below "
                    "50 (half is the most). |\n"
                    "| `probe.pause` | duration | `1s` | 100ms to 1m | How long to pause. |"]
