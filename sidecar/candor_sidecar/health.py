"""/health documents in draft-inadarei-api-health-check form (`application/health+json`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from candor_sidecar.checks import FAIL, PASS, CheckResult, Evaluation, worst
from candor_sidecar.release import VERSION

CONTENT_TYPE = "application/health+json"


def iso_time(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(check: CheckResult, when: str, verbose: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": check.status, "time": when, "componentType": check.component_type}
    if check.component_id is not None:
        entry["componentId"] = check.component_id
    if check.observed_value is not None:
        entry["observedValue"] = check.observed_value
        entry["observedUnit"] = check.observed_unit
    if check.status != PASS or verbose:  # the draft: output SHOULD be omitted for pass
        entry["output"] = check.output
    return entry


def select(checks: tuple[CheckResult, ...], name: str) -> list[CheckResult]:
    """`memory`, `memory:utilization` or `deadlock` (every deadlock check)."""
    return [check for check in checks if check.key == name or check.key.split(":")[0] == name]


def health_document(evaluation: Evaluation, checks: list[CheckResult] | tuple[CheckResult, ...],
                    verbose: bool = False, notes: list[str] | None = None) -> tuple[int, bytes]:
    """(HTTP status, body): 200 for pass and warn, 503 for fail."""
    status = worst([check.status for check in checks])
    when = iso_time(evaluation.wall_time)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for check in checks:
        grouped.setdefault(check.key, []).append(_entry(check, when, verbose))
    document: dict[str, Any] = {"status": status, "version": "1", "releaseId": VERSION,
                                "serviceId": "candor-sidecar", "description": "health of the pod's app, seen by Candor"}
    problems = [check.reason or check.output for check in checks if check.status != PASS]
    if problems:
        document["output"] = "; ".join(problems)
    if notes:
        document["notes"] = notes
    document["checks"] = grouped
    body = json.dumps(document, indent=2 if verbose else None, separators=None if verbose else (",", ":"))
    return (503 if status == FAIL else 200), (body + "\n").encode()
