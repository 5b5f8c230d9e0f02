"""A drain's summary, as the sidecar leaves it in its container's termination message and the operator reads it
there: how long the drain took, what began it, how it ended, and how many load balancers ended each way.

The sidecar holds no API credentials, so it cannot post an Event; the kubelet copies the container's termination
message file into the pod's status when the container exits (`state.terminated.message`), and the operator,
which follows governed pods, turns it into the pod's `Drained` Event (candor_operator.drain_events). One line
of JSON, far below the kubelet's 4096 bytes, with counts only (addresses would make it grow with the number of
HAProxys):

    {"drain":{"seconds":2.13,"outcome":"removed","begunBy":"preStop","heard":0,"removed":1,"silent":0,"timedOut":0}}

`outcome` is DrainTally.outcome (heard, removed, unpolled, silent, timeout); `heard`, `removed`, `silent` and
`timedOut` count the load balancers whose wait ended that way (candor_sidecar.drain.state.DrainEnd).
`"atExit":true` marks a drain the sidecar's exit cut short (written as it stood then). A reader ignores keys it
does not know, so a later sidecar may add some.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from candor_sidecar.drain.history import OUTCOMES
from candor_sidecar.drain.state import DrainTally

KEY = "drain"
MAX_BYTES = 4096  # the kubelet keeps no more of a container's termination message
COUNTS = (("heard", "heard"), ("removed", "removed"), ("silent", "silent"), ("timedOut", "timed_out"))


class SummaryError(ValueError):
    """A termination message that is not a readable drain summary; the text names the field and the problem."""


@dataclass(frozen=True)
class DrainSummary:
    seconds: float
    outcome: str  # one of OUTCOMES
    begun_by: str  # "preStop" or "SIGTERM"
    heard: int
    removed: int
    silent: int
    timed_out: int
    at_exit: bool = False

    @classmethod
    def of(cls, seconds: float, tally: DrainTally, begun_by: str, at_exit: bool = False) -> DrainSummary:
        return cls(round(seconds, 2), tally.outcome, begun_by, len(tally.heard), len(tally.removed),
                   len(tally.silent), len(tally.pending), at_exit)

    @property
    def balancers(self) -> int:
        return self.heard + self.removed + self.silent + self.timed_out

    def message(self) -> str:
        """The termination message: one line of JSON."""
        fields: dict[str, Any] = {"seconds": self.seconds, "outcome": self.outcome, "begunBy": self.begun_by}
        fields.update((name, getattr(self, attribute)) for name, attribute in COUNTS)
        if self.at_exit:
            fields["atExit"] = True
        return json.dumps({KEY: fields}, separators=(",", ":")) + "\n"


def parse_summary(text: str) -> DrainSummary | None:
    """The summary in a Candor sidecar's termination message; None when the message is empty (no drain ended,
    or a release that wrote none). Anything else that is not a summary raises SummaryError."""
    # The first line: a shorter summary written over a longer one may leave the longer one's tail behind it.
    line = text.strip().split("\n", 1)[0].strip() if text.strip() else ""
    if not line:
        return None
    try:
        document = json.loads(line)
    except ValueError:
        raise SummaryError(f"not JSON: {line[:60]!r}") from None
    if not isinstance(document, dict) or not isinstance(document.get(KEY), dict):
        raise SummaryError(f"expected an object with a {KEY!r} object, got {line[:60]!r}")
    fields: dict[str, Any] = document[KEY]
    seconds = fields.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds < 0:
        raise SummaryError(f"{KEY}.seconds: expected a number of seconds (0 or more), got {seconds!r}"[:120])
    outcome = fields.get("outcome")
    if outcome not in OUTCOMES:
        raise SummaryError(f"{KEY}.outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}"[:120])
    begun_by = fields.get("begunBy")
    if not isinstance(begun_by, str) or not begun_by.isalnum() or len(begun_by) > 16:
        raise SummaryError(f"{KEY}.begunBy: expected a word such as preStop or SIGTERM, got {begun_by!r}"[:120])
    counts: dict[str, int] = {}
    for name, attribute in COUNTS:
        count = fields.get(name)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 1_000_000:
            raise SummaryError(f"{KEY}.{name}: expected a count (0 or more), got {count!r}"[:120])
        counts[attribute] = count
    return DrainSummary(float(seconds), str(outcome), begun_by, at_exit=fields.get("atExit") is True, **counts)
