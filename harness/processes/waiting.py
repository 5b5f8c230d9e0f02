"""The one polling wait of the tests, the bench and the test cluster: poll a predicate until it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[..., Any], timeout: float, what: str, interval: float = 0.05, *,
               check: Callable[[], None] | None = None, error: type[Exception] = AssertionError,
               hint: str = "") -> Any:
    """Poll `predicate` every `interval` s until it returns something truthy, and return that. (It is called
    with no arguments; `...` lets a lambda bind a loop variable as a default, `lambda job=job: ...`.)

    `check` runs before each poll, so a process the wait depends on that died fails the wait at once with
    its own error instead of a timeout. After `timeout` s, raises `error` naming `what` (and `hint`, such
    as where the logs are).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout} s waiting for {what}" + (f" ({hint})" if hint else ""))
        time.sleep(interval)
