"""The label check shared by the framework integrations: a counter must have exactly the labels they fill.

Checked once when an integration is set up, so a mismatch is an error at start-up that names the counter and
both label sets, never an exception inside a task, a job or a request. The request middlewares (asgi, wsgi)
take their labels the same way, so `request_trace` turns those labels into each request's trace for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from prometheus_client import Counter

from candor_tracer.tracer import Trace, Tracer

__all__ = ["request_trace", "require_counter", "require_labels"]

R = TypeVar("R")  # what a request's labels are a function of: an ASGI scope, a WSGI environ


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


def request_trace(counter: Counter, labels: Mapping[str, str] | Callable[[R], Mapping[str, str]] | None,
                  tracer: Tracer | None, where: str, of: str) -> Callable[[R], Trace]:
    """The trace of each request a middleware serves, into `counter` on `tracer` (the default one if None),
    labelled by `labels`: a mapping, or a function of the request's `of` (its scope, its environ).

    With a mapping (or none), the counter's label names must be exactly its keys (checked now); a function's
    labels are checked per request, and ones that do not fit the counter raise ValueError naming them.
    """
    if labels is None or isinstance(labels, Mapping):
        static = dict(labels or {})
        require_labels(counter, tuple(static), where)
        chosen = tracer or _default_tracer()
        return lambda _: chosen.trace(counter, **static)
    if not callable(labels):
        raise TypeError(f"{where}: labels must be a mapping or a function of the {of}, got {labels!r}")
    require_counter(counter, where)
    function, chosen = labels, tracer or _default_tracer()
    return lambda request: chosen.trace(counter, **function(request))


def _default_tracer() -> Tracer:
    from candor_tracer import default_tracer  # the package imports this module's users, not the reverse
    return default_tracer
