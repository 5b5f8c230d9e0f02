"""The label check shared by the framework integrations: a counter must have exactly the labels they fill.

Checked once when an integration is set up, so a mismatch is an error at start-up that names the counter and
both label sets, never an exception inside a task, a job or a request.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["require_counter", "require_labels"]


def require_counter(counter: object, where: str) -> Counter:
    """`counter` itself, once it is a prometheus_client Counter (the parent, not a child made by .labels())."""
    if not isinstance(counter, Counter):
        raise TypeError(f"{where}: counter must be a prometheus_client Counter, got {type(counter).__name__}")
    if counter._labelvalues:
        raise ValueError(f"{where}: pass the Counter itself, not a child made by .labels()")
    return counter


def require_labels(counter: object, names: tuple[str, ...], where: str) -> Counter:
    """`counter` itself, once it is a prometheus_client Counter whose label names are exactly `names`."""
    counter = require_counter(counter, where)
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: the label names {list(names)} repeat a name")
    have = tuple(counter._labelnames)
    if set(have) != set(names):
        raise ValueError(f"{where}: counter {counter._name} has labels {list(have)}, but this integration fills "
                         f"{list(names)}; create it as Counter({counter._name + '_total'!r}, ..., {list(names)})")
    return counter
