"""The admin word (maint, drain) this pod's agent said last, kept in the state directory.

HAProxy keeps a server in MAINT or DRAIN after its agent says so, until an answer says `ready`. But
`ready` also cancels a MAINT or DRAIN that an operator set through HAProxy's runtime API, so the agent
says it only to lift a state it set itself: after the maintenance annotation goes, or after a restart when
the sidecar before it in this pod (same stateDir: an emptyDir outlives container restarts) said maint or
drain. The file is not a journal name, so the tracer's reader ignores it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("candor.sidecar.agent")

FILE_NAME = "agent-admin-word"
ADMIN_WORDS = frozenset({"maint", "drain"})


def read_admin_word(state_dir: str) -> str | None:
    """The admin word a sidecar of this pod said and has not lifted yet, or None."""
    try:
        word = (Path(state_dir) / FILE_NAME).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return word if word in ADMIN_WORDS else None


def remember_admin_word(state_dir: str, word: str | None) -> None:
    """Record `word` (maint or drain), or forget it (None). A failure is logged: the agent still answers."""
    path = Path(state_dir) / FILE_NAME
    try:
        if word is None:
            path.unlink(missing_ok=True)
            return
        temp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        temp.write_text(word + "\n", encoding="ascii")
        os.replace(temp, path)  # a reader sees the old word or the new one, never half of it
    except OSError as error:
        log.warning("cannot record the agent's admin word in %s: %s", path, error)
