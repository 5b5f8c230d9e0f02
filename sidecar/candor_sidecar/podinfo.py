"""The pod's annotations from a downwardAPI volume (`<podInfoDir>/annotations`).

The kubelet writes `key="value"` lines (values quoted as Go's strconv.Quote does) and swaps the whole
directory through a symlink when they change, so re-reading the file each evaluation sees a consistent,
current version without watching anything.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from candor_tracer.pod_contract import PODINFO_ANNOTATIONS

MAINTENANCE_ANNOTATION = "candor.io/maintenance"


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
        except ValueError:
            try:  # Go's \x escapes are not JSON but are Python
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                return raw[1:-1]
        return value if isinstance(value, str) else raw[1:-1]
    return raw


def parse_annotations(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if sep and key.strip():
            result[key.strip()] = _unquote(raw)
    return result


def read_annotations(pod_info_dir: str | None) -> dict[str, str]:
    """The current annotations; empty when the volume or file is absent."""
    if not pod_info_dir:
        return {}
    try:
        text = (Path(pod_info_dir) / PODINFO_ANNOTATIONS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return parse_annotations(text)


def maintenance_requested(annotations: dict[str, str]) -> bool:
    return annotations.get(MAINTENANCE_ANNOTATION, "").strip().lower() == "true"
