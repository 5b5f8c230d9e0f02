"""The process's declared capacity: how many traces it can run at once (its workers or threads).

The sidecar's occupancy figure is in-flight traces against this. The gunicorn, Celery and RQ integrations
declare it for their workers; any other app calls `declare_capacity(n)` once it knows its concurrency.
A forked child starts undeclared: it is another process with a capacity of its own (a gunicorn worker or a
Celery pool child declares its own; an RQ work-horse runs the one job its worker declared room for).
"""

from __future__ import annotations

import os

_MAX_CAPACITY = 1_000_000
_capacity: int | None = None


def declare_capacity(workers: int | None) -> None:
    """Say this process runs at most `workers` traces at once (None: withdraw the declaration).

    Read by the heartbeat at each beat. Raises ValueError for anything but None or an int from 1 to 1000000.
    """
    global _capacity
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                or not 1 <= workers <= _MAX_CAPACITY):
        raise ValueError(f"declare_capacity() takes None or a number of workers from 1 to {_MAX_CAPACITY}, "
                         f"got {workers!r}")
    _capacity = workers


def declared_capacity() -> int | None:
    return _capacity


def _forget_in_child() -> None:
    global _capacity
    _capacity = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
