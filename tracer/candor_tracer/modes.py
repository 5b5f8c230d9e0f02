"""What several tracer modules share, kept in a leaf so no module needs another just for a name.

The heartbeat's environment setting, the mode tokens, and the counter that numbers traces
without a journal slot. Imports nothing of Candor's.
"""

from __future__ import annotations

import itertools
import logging
import math
import os

log = logging.getLogger("candor_tracer")

HEARTBEAT_ENV = "CANDOR_HEARTBEAT_INTERVAL"
# Half a second: what a killed process can lose, and the largest share of how late the sidecar sees the
# app's memory (each beat carries the container's memory figures). Two wake-ups a second per process.
DEFAULT_HEARTBEAT_INTERVAL = 0.5

# A tracer starts UNRESOLVED; its first trace picks JOURNAL (a usable state directory) or IN_PROCESS.
UNRESOLVED, JOURNAL, IN_PROCESS = 0, 1, 2
FROM_ENV = object()  # the state_dir default: read $CANDOR_STATE_DIR (pod_contract) at the first trace

# Tokens of traces without a journal slot are positive; next() is atomic under the GIL, so no lock.
trace_tokens = itertools.count(1)


def heartbeat_interval_from_env() -> float:
    """$CANDOR_HEARTBEAT_INTERVAL in seconds; the default (warned once per call) when unset or out of range."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None or raw == "":
        return DEFAULT_HEARTBEAT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0.01 <= value <= 3600):
        log.warning("candor: %s=%r is not a number of seconds in [0.01, 3600]; using %s",
                    HEARTBEAT_ENV, raw, DEFAULT_HEARTBEAT_INTERVAL)
        return DEFAULT_HEARTBEAT_INTERVAL
    return value
