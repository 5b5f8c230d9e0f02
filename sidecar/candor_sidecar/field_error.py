"""The one error every Candor config reader raises: the field that is wrong, and what is allowed there.

`field` is what a user looks for: a dotted key (`disk.maxPercent`), a HealthPolicy path (`spec.slowStart`),
a flag (`--http-port`) or the file itself; `problem` says what is allowed. The YAML reader, the duration
parser, the sidecar config, the HealthPolicy and the label selector all raise this type, so a field named
deep in one reader reaches the user unchanged, and a caller catches one type.
"""

from __future__ import annotations


class FieldError(ValueError):
    """A bad value: `str()` is `<field>: <problem>`."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
