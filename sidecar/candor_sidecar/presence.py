"""Whether an app process was ever here, and since when none is: a vanished app must fail /health.

A live journal writer holds its journal's lock; when the app process exits (or is SIGKILLed) the lock is
released and the journal is folded into the archive. With no writer left, the pod has no app to route to,
yet the other checks have nothing to fail on. So: once a writer has been seen alive by this sidecar, or
the state directory's archive records a fold (a restarted sidecar also knows an app was there), "no live
writer" means the app exited (a failure for heartbeatTimeout, see checks._app_exited). A pod whose app
never journaled anything has only a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from candor_tracer.journal.reader import JournalSnapshot


@dataclass(frozen=True)
class AppAbsence:
    """No live writer now, though an app was here."""

    since: float | None  # monotonic time it was last seen alive by this sidecar; None when only the archive knows
    last_fold_wall: float | None  # time.time() of the archive's latest fold, if any


class AppPresence:
    """Fed every evaluation's snapshot (on one thread: the journal worker); says whether the app is gone."""

    def __init__(self) -> None:
        self.last_seen_alive: float | None = None  # monotonic snapshot time with at least one live writer

    def observe(self, snapshot: JournalSnapshot | None) -> AppAbsence | None:
        """Remember this snapshot; an AppAbsence when the app has gone, None when live or never seen."""
        if snapshot is None:  # journals unreadable: no news either way (the journal check warns)
            return None
        if snapshot.writers:
            self.last_seen_alive = snapshot.now
            return None
        if self.last_seen_alive is None and snapshot.last_fold is None:
            return None  # not started yet, or not traced: nothing says an app was ever here
        return AppAbsence(self.last_seen_alive, snapshot.last_fold)
