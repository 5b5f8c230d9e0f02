"""Journals with chosen bytes: real writers' files, then records rewritten with valid checksums.

A checksum only tells a torn write from a whole one; bytes written on purpose (or by a bug) carry valid
checksums. So these helpers change one field of one record and re-seal it, which reaches every check
behind the checksum.
"""

from __future__ import annotations

import struct
from pathlib import Path

from candor_tracer.journal.format import (
    COUNTERS,
    COUNTERS_BODY,
    COUNTERS_OFFSET,
    HEADER,
    HEADER_BODY,
    HEADER_OFFSET,
    HEARTBEAT,
    HEARTBEAT_BODY,
    HEARTBEAT_OFFSET,
    OBSERVED,
    OBSERVED_BODY,
    OBSERVED_OFFSET,
    SERIES,
    SERIES_BODY,
    SLOT,
    crc,
    series_offset,
    slot_offset,
)

# record -> (struct of the whole record, struct of its checksummed body, offset of copy 0, copies)
RECORDS: dict[str, tuple[struct.Struct, struct.Struct, int, int]] = {
    "header": (HEADER, HEADER_BODY, HEADER_OFFSET, 1),
    "counters": (COUNTERS, COUNTERS_BODY, COUNTERS_OFFSET, 2),
    "heartbeat": (HEARTBEAT, HEARTBEAT_BODY, HEARTBEAT_OFFSET, 2),
    "observed": (OBSERVED, OBSERVED_BODY, OBSERVED_OFFSET, 2),
}
FIELDS = {  # record -> field names in body order
    "header": ("magic", "version", "pid", "starttime", "created_mono", "created_wall", "max_series", "max_slots",
               "desc_size"),
    "counters": ("seq", "series_count", "slot_hwm", "desc_used"),
    "heartbeat": ("seq", "alive_at", "progress_at", "memory_current", "memory_max", "inactive_file", "stall_at",
                  "stall_seconds", "loop_turned_at"),
    "observed": ("seq", "observed_at"),
    "series": ("commit", "total"),
    "slot": ("start", "end", "target", "series", "state"),
}


def _seal(image: bytearray, body: struct.Struct, at: int, values: list[object]) -> None:
    packed = body.pack(*values)
    image[at: at + len(packed)] = packed
    image[at + len(packed): at + len(packed) + 4] = struct.pack("<I", crc(packed))


def forge(image: bytes | bytearray, record: str, field: str, value: object, copy: int = 0, index: int = 0) -> bytes:
    """`image` with `field` of `record` (copy `copy`; series/slot number `index`) set to `value`, re-sealed."""
    out = bytearray(image)
    position = FIELDS[record].index(field)
    if record == "slot":
        at = slot_offset(index)
        values = list(SLOT.unpack_from(out, at))
        values[position] = value
        out[at: at + SLOT.size] = SLOT.pack(*values)
        return bytes(out)
    if record == "series":
        at = series_offset(index, copy)
        values = list(SERIES.unpack_from(out, at))[: len(FIELDS[record])]
        values[position] = value
        _seal(out, SERIES_BODY, at, values)
        return bytes(out)
    whole, body, offset, _ = RECORDS[record]
    at = offset + copy * whole.size
    values = list(whole.unpack_from(out, at))[: len(FIELDS[record])]
    values[position] = value
    _seal(out, body, at, values)
    return bytes(out)


def forge_file(path: Path, record: str, field: str, value: object, copy: int = 0, index: int = 0) -> None:
    """Rewrite one field of the journal at `path` in place (also while its writer holds it)."""
    with open(path, "r+b") as f:
        image = f.read()
        f.seek(0)
        f.write(forge(image, record, field, value, copy, index))


def forge_every_copy(path: Path, record: str, field: str, value: object, index: int = 0) -> None:
    copies = 1 if record in ("header", "slot") else 2
    for copy in range(copies):
        forge_file(path, record, field, value, copy, index)
