"""Durations in the Go forms every Candor config accepts: `500ms`, `3s`, `2m`, `1h30m`, `250us`.

One grammar and one parser for the HealthPolicy (whose CRD checks the same pattern and CEL
`duration()` bounds) and the sidecar config the operator renders from it, so a value accepted on one
side means exactly the same on the other. Values are read as whole nanoseconds with integer
arithmetic: `100000us` is exactly `0.1s`, and a value at a range's edge is never refused by a float
rounding. Days are not a unit because CEL's `duration()` cannot read them.
"""

from __future__ import annotations

import re

from candor_sidecar.field_error import FieldError
from candor_sidecar.shown import show

# The OpenAPI `pattern` of every duration field in crds/healthpolicy.yaml is this string (candor_operator.crd).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(us|ms|s|m|h))+$"
MAX_DURATION_LENGTH = 32
_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+)(?:\.([0-9]+))?(us|ms|s|m|h)")
_NANOS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
NANOS_PER_SECOND = 1_000_000_000


def seconds_to_nanos(seconds: float) -> int:
    """A range limit written in seconds (`0.1`, `3600.0`) as the whole nanoseconds it denotes."""
    return round(seconds * NANOS_PER_SECOND)


def parse_duration_nanos(value: object, field: str) -> int:
    """Whole nanoseconds from `500ms`, `3s`, `2m`, `1h30m` (a bare number is refused: its unit would be a guess).

    A fraction finer than a nanosecond is refused rather than rounded, as Go's ParseDuration would
    silently do, because the CRD's CEL and this parser must agree on every value.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise FieldError(field, f"expected a duration such as 500ms, 3s or 2m, got {show(value)}")
    # fullmatch: `$` alone also matches before a final newline, which the API server's RE2 refuses.
    if len(value) > MAX_DURATION_LENGTH or not _WHOLE.fullmatch(value):
        raise FieldError(
            field, f"must be a duration such as 500ms, 3s, 2m or 1h30m (units us, ms, s, m, h), got {show(value)}"
        )
    total = 0
    for whole, fraction, unit in _PART.findall(value):
        size = _NANOS[unit]
        total += int(whole) * size
        if fraction:
            numerator = int(fraction) * size
            denominator = 10 ** len(fraction)
            if numerator % denominator:
                raise FieldError(field, f"{value} is finer than a nanosecond")
            total += numerator // denominator
    return total


def parse_duration(value: object, field: str, *, minimum: float = 0.0, maximum: float | None = None) -> float:
    """Seconds from a duration, checked exactly against [minimum, maximum] (given in seconds)."""
    nanos = parse_duration_nanos(value, field)
    if nanos < seconds_to_nanos(minimum):
        raise FieldError(field, f"{value} is below the minimum of {format_duration(minimum)}")
    if maximum is not None and nanos > seconds_to_nanos(maximum):
        raise FieldError(field, f"{value} is above the maximum of {format_duration(maximum)}")
    return nanos / NANOS_PER_SECOND


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
