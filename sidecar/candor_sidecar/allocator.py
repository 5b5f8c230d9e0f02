"""One malloc arena for the whole sidecar process.

glibc gives a thread that allocates while another one does an arena of its own, and keeps what was freed
there for that thread: the journal reader threads (the evaluation's and the scrapes') would each keep
about 0.7 MiB resident after their first reads. The sidecar's threads take turns on the GIL anyway, so a
single arena costs it no speed. Off glibc (musl has no mallopt) nothing changes.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's <malloc.h>


def single_arena() -> bool:
    """Ask malloc for one arena; True when it agreed. Call before any thread starts."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, 1))
