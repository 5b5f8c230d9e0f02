"""Durations in the Kubernetes/HAProxy forms every Candor config accepts: `500ms`, `3s`, `2m`, `1h30m`.

Shared by the sidecar config and the operator (which depends on the sidecar's config schema),
so a duration means the same thing on both sides.
"""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:us|ms|s|m|h|d))+$")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(us|ms|s|m|h|d))+$"  # the same grammar, for OpenAPI schemas


class DurationError(ValueError):
    """A duration that cannot be parsed or lies outside its allowed range; names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_duration(value: object, field: str, *, minimum: float = 0.0, maximum: float | None = None) -> float:
    """Seconds from `500ms`, `3s`, `2m`, `1h30m` (a bare number is refused: its unit would be a guess)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise DurationError(field, f"expected a duration such as 500ms, 3s or 2m, got {value!r}")
    text = value.strip()
    if not _WHOLE.match(text):
        raise DurationError(field, f"{value!r} is not a duration; use a number with a unit (us, ms, s, m, h, d)")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(text))
    if seconds < minimum:
        raise DurationError(field, f"{value} is below the minimum of {format_duration(minimum)}")
    if maximum is not None and seconds > maximum:
        raise DurationError(field, f"{value} is above the maximum of {format_duration(maximum)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact HAProxy form: `500ms`, `3s`, `2m`, `1h`; milliseconds when not whole seconds."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    for unit, size in (("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
