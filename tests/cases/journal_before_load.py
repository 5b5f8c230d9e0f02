"""A frozen copy of how a reader of before the load record (journal VERSION 1, as of commit a8a807d) decodes a
journal's first page: the header, counters, heartbeat and observed records, at their offsets.

Never update this to follow journal.format: it stands for sidecars already deployed, so the compatibility
tests can show that a journal written by today's tracer still reads, for them, exactly as it did.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

MAGIC = b"CANDORJ1"
VERSION = 1
HEADER = struct.Struct("<8sIIQddIIII")
HEADER_BODY = struct.Struct("<8sIIQddIII")
COUNTERS = struct.Struct("<QIIII")
COUNTERS_OFFSET = 128
HEARTBEAT = struct.Struct("<QddqqqdddI4x")
HEARTBEAT_BODY = struct.Struct("<Qddqqqddd")
HEARTBEAT_OFFSET = 256
OBSERVED = struct.Struct("<QdI4x")
OBSERVED_OFFSET = 512
FIRST_PAGE = 4096

# The byte ranges of the first page such a reader decodes; everything else there it never looks at.
READ_RANGES = ((0, HEADER.size), (COUNTERS_OFFSET, COUNTERS_OFFSET + 2 * COUNTERS.size),
               (HEARTBEAT_OFFSET, HEARTBEAT_OFFSET + 2 * HEARTBEAT.size),
               (OBSERVED_OFFSET, OBSERVED_OFFSET + 2 * OBSERVED.size))


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def decode_first_page(page: bytes) -> dict[str, Any]:
    """What the old reader takes from a first page; raises ValueError where it would refuse the journal."""
    magic, version, pid, starttime, created_mono, _wall, *_caps, check = HEADER.unpack_from(page)
    if magic != MAGIC or check != _crc(page[: HEADER_BODY.size]):
        raise ValueError("not a journal")
    if version != VERSION:
        raise ValueError(f"unsupported journal version {version}")
    beats = []
    for copy in (0, 1):
        at = HEARTBEAT_OFFSET + copy * HEARTBEAT.size
        seq, alive, _progress, current, limit, inactive, *_watch, crc = HEARTBEAT.unpack_from(page, at)
        if seq and crc == _crc(page[at: at + HEARTBEAT_BODY.size]):
            beats.append((seq, alive, current, limit, inactive))
    if not beats:
        raise ValueError("both heartbeat records are corrupt")
    seq, alive, current, limit, inactive = max(beats)
    return {"pid": pid, "starttime": starttime, "created_mono": created_mono, "heartbeat_seq": seq,
            "alive_at": alive, "memory_current": None if current < 0 else current,
            "memory_max": None if limit < 0 else limit, "inactive_file": None if inactive < 0 else inactive}
