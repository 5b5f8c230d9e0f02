"""Counter, gauge and histogram families in Prometheus text (0.0.4) and OpenMetrics (1.0.0), by `Accept`.

The sidecar exposes only these three types, so it writes the two text formats itself instead of
importing prometheus_client: that package loads http.server, wsgiref, urllib.request and ssl with it,
a quarter of what a sidecar in every pod may cost. The formats' rules kept here: names and label names
are checked against the data model (a family that breaks them is refused, never written half), label
values and help text are escaped, floats are written as Python's repr (`+Inf`, `-Inf`, `NaN` spelt as
Prometheus spells them), and an OpenMetrics body ends with `# EOF`. The tests parse every body with
prometheus_client's own parsers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TEXT = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TYPES = ("counter", "gauge", "histogram")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


class ExpositionError(ValueError):
    """A family the formats cannot carry (a bad name, label or value); it names what is wrong."""


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float
    suffix: str = ""  # a histogram's `_bucket`, `_count` or `_sum`


@dataclass
class Family:
    """One metric family. For a counter, `name` has no `_total`: its samples are written as `<name>_total`.
    A histogram's samples carry their suffix (see `observe_histogram`)."""

    name: str
    documentation: str
    type: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, labels: Iterable[tuple[str, str]] = (), suffix: str = "") -> None:
        self.samples.append(Sample(tuple(labels), float(value), suffix))

    def add_histogram(self, bounds: Sequence[float], counts: Sequence[int], total: float,
                      labels: Iterable[tuple[str, str]] = ()) -> None:
        """One histogram series: `counts[i]` observations in (bounds[i-1], bounds[i]], the last past every
        bound (so len(counts) == len(bounds) + 1); written cumulative, with `+Inf`, `_count` and `_sum`."""
        labels = tuple(labels)
        cumulative = 0
        for bound, count in zip([*bounds, math.inf], counts, strict=True):
            cumulative += count
            self.add(cumulative, (*labels, ("le", _number(float(bound)))), "_bucket")
        self.add(cumulative, labels, "_count")
        self.add(total, labels, "_sum")

    def check(self) -> None:
        """ExpositionError unless every part of the family can be written in both formats."""
        if self.type not in _TYPES:
            raise ExpositionError(f"type {self.type!r} is not one of {', '.join(_TYPES)}")
        if not _METRIC_NAME.match(self.name):
            raise ExpositionError(f"metric name {self.name!r} is not [a-zA-Z_:][a-zA-Z0-9_:]*")
        if not _is_utf8_text(self.documentation):
            raise ExpositionError(f"help of {self.name} is not UTF-8 text")
        for sample in self.samples:
            if not isinstance(sample.value, float):
                raise ExpositionError(f"{self.name}: value {sample.value!r} is not a number")
            if self.type in ("counter", "histogram") and (sample.value < 0 or math.isnan(sample.value)):
                raise ExpositionError(f"{self.name}: a {self.type} cannot be {sample.value!r}")
            if (sample.suffix in _HISTOGRAM_SUFFIXES) != (self.type == "histogram"):
                raise ExpositionError(f"{self.name}: suffix {sample.suffix!r} does not fit a {self.type}")
            seen = set()
            for pair in sample.labels:
                if len(pair) != 2 or not all(_is_utf8_text(part) for part in pair):
                    raise ExpositionError(f"{self.name}: label {pair!r} is not a (name, value) pair of UTF-8 text")
                name = pair[0]
                if not _LABEL_NAME.match(name) or name.startswith("__"):
                    raise ExpositionError(f"{self.name}: label name {name!r} is not [a-zA-Z_][a-zA-Z0-9_]*")
                if name in seen:
                    raise ExpositionError(f"{self.name}: label {name!r} appears twice")
                seen.add(name)


def choose_format(accept: str) -> tuple[bool, str]:
    """(OpenMetrics?, content type): OpenMetrics when the scraper asks for it, else Prometheus text."""
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media == "application/openmetrics-text":
            return True, OPENMETRICS_TEXT
    return False, PROMETHEUS_TEXT


def encode(families: Sequence[Family], openmetrics: bool) -> bytes:
    """The body for `families` (checked beforehand with Family.check)."""
    lines: list[str] = []
    for family in families:
        name = family.name
        sample_name = name + "_total" if family.type == "counter" else name
        # Prometheus text names a counter family by its samples' name; OpenMetrics by the name without _total.
        shown = name if openmetrics else sample_name
        lines.append(f"# HELP {shown} {_escape_help(family.documentation, openmetrics)}")
        lines.append(f"# TYPE {shown} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sample.labels)
            written = sample_name + sample.suffix
            lines.append(f"{written}{{{labels}}} {_number(sample.value)}" if labels
                         else f"{written} {_number(sample.value)}")
    if openmetrics:
        lines.append("# EOF")
    return ("\n".join(lines) + "\n").encode()


def _is_utf8_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a file name read with surrogateescape
        return False
    return True


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)
