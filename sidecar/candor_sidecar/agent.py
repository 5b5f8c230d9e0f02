"""HAProxy agent-check: what the agent says, kept by the sidecar and answered by agent_server.

Answering only formats a line from what the evaluation loop last decided, so it costs microseconds and
never waits for anything.
Protocol words (HAProxy `agent-check`): `up`, `down`, `drain`, `maint`, `ready`, `N%`, `maxconn:N`,
and a free-text reason after `#`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

REASON_LIMIT = 1024  # characters: HAProxy reads one short line; a longer reason is cut, never fatal
READY_WINDOW = 30.0  # seconds to keep saying `ready` when lifting a maint or drain this agent said


class AgentState:
    """What the agent says, updated by the evaluation loop and by signals; `line()` formats it.

    `lift_admin_state`: a previous sidecar of this pod said maint or drain (see admin_word), so this one
    starts by saying `ready` for READY_WINDOW. Otherwise `ready` is said only after maintenance ends: it
    would also cancel a MAINT an operator set through HAProxy's runtime API.
    """

    def __init__(self, slow_start: float, max_conn: int | None, clock: Callable[[], float] = time.monotonic,
                 lift_admin_state: bool = False) -> None:
        self.slow_start = slow_start
        self.max_conn = max_conn
        self.clock = clock
        now = clock()
        self.ramp_from = now  # new pods ramp too: HAProxy's own slowstart skips new servers
        self.ready_until = now + READY_WINDOW if lift_admin_state else now
        self.failing = False
        self.reason = ""
        self.maintenance = False
        self.draining = False
        # The load factor (percent) the ramp's weight is multiplied by, and what holds it below 100 (see
        # load_weight): set by the evaluation loop when the policy turns load weights on.
        self.load_factor = 100
        self.load_figure: str | None = None
        self.load_reason = ""
        self._on_change: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every update and drain."""
        self._on_change.append(callback)

    def _changed(self) -> None:
        for callback in self._on_change:
            callback()

    def update(self, failing: bool, reason: str, maintenance: bool) -> None:
        now = self.clock()
        if self.failing and not failing:
            self.ramp_from = now  # recovered: traffic comes back slowly
        if self.maintenance and not maintenance:
            self.ramp_from = now
            self.ready_until = now + READY_WINDOW
        self.failing, self.reason, self.maintenance = failing, reason, maintenance
        self._changed()

    def set_load(self, factor: int, figure: str | None, reason: str) -> None:
        """The load factor from the latest evaluation; 1 to 100 (load alone never says 0)."""
        self.load_factor = max(1, min(100, factor))
        self.load_figure, self.load_reason = (figure, reason) if self.load_factor < 100 else (None, "")

    def drain(self) -> None:
        self.draining = True
        self._changed()

    def undrain(self) -> None:
        """Lift a drain of our own: say `ready` for READY_WINDOW, so HAProxy leaves DRAIN as after maintenance."""
        if self.draining:
            self.draining = False
            self.ready_until = self.clock() + READY_WINDOW
            self._changed()

    def saying_ready(self, now: float | None = None) -> bool:
        return (self.clock() if now is None else now) < self.ready_until

    def ramp_percent(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        if self.slow_start <= 0:
            return 100
        elapsed = now - self.ramp_from
        return max(1, min(100, math.floor(100 * elapsed / self.slow_start)))

    def weight_percent(self, now: float | None = None) -> int:
        """The ramp's weight times the load factor; at least 1 (a weight of 0 would be a drain)."""
        return max(1, self.ramp_percent(now) * self.load_factor // 100)

    def weight_reason(self, now: float | None = None) -> str:
        """What holds the weight below 100: the load figure ("cpu", "occupancy"), "slowStart", or "full"."""
        if self.load_factor < 100 and self.load_figure:
            return self.load_figure
        return "slowStart" if self.ramp_percent(now) < 100 else "full"

    def word(self) -> str:
        if self.draining:
            return "drain"
        if self.maintenance:
            return "maint"
        if self.failing:
            return "down"
        return "up"

    def line(self, now: float | None = None) -> bytes:
        now = self.clock() if now is None else now
        if self.draining:
            text = "drain # pod terminating"
        elif self.maintenance:
            text = "maint # annotation candor.io/maintenance=true"
        else:
            # `ready` goes with `down` too: an app failing right after maintenance must not stay in MAINT
            # once it recovers (one admin, one operational word and a weight may share a line)
            words = ["ready"] if self.saying_ready(now) else []
            if self.failing:
                words += ["down", "#", _clean(self.reason) or "unhealthy"]
            else:
                words += ["up", f"{self.weight_percent(now)}%"]
                if self.max_conn is not None:
                    words.append(f"maxconn:{self.max_conn}")
                if self.load_reason:
                    words += ["#", _clean(self.load_reason)]
            text = " ".join(words)
        return text.encode("ascii", "replace") + b"\n"


def _clean(reason: str) -> str:
    # One line only: a newline inside the reason would end the reply early.
    return " ".join(reason[:REASON_LIMIT].split())
