"""The load record keeps the journal readable both ways: an older sidecar reads a newer app's journal as
before (it never reads the record), and this sidecar reads an older app's journal with no load figures, which
change nothing."""

from __future__ import annotations

import os
from pathlib import Path

from candor_sidecar.checks import cpu_check
from candor_sidecar.config import LoadWeightConfig, SidecarConfig
from candor_sidecar.load import LoadMeter
from candor_sidecar.load_weight import LoadWeight
from candor_tracer import MemoryFigures, declare_capacity
from candor_tracer.journal import format as journal_format
from candor_tracer.journal.reader import read_writers
from candor_tracer.journal.writer import JournalWriter
from tests.cases import journal_before_load as old
from tests.cases.journal_forge import forge

MEMORY = MemoryFigures(current=300 << 20, limit=512 << 20, inactive_file=10 << 20)


def load_record(at: float) -> journal_format.LoadRecord:
    return journal_format.LoadRecord(seq=0, read_at=at, cpu_usage_ns=5_000_000_000, cpu_periods=10,
                                     cpu_throttled_periods=2, cpu_throttled_ns=1000, cpu_quota_cores=0.5,
                                     cpu_pressure_some=None, online_cores=2, cgroup=42, capacity=4)


def first_page(writer: JournalWriter) -> bytes:
    return writer.path.read_bytes()[: journal_format.FIRST_PAGE]


def test_the_load_record_lies_outside_every_byte_an_older_reader_reads() -> None:
    start = journal_format.LOAD_OFFSET
    end = start + 2 * journal_format.LOAD.size
    assert end <= old.FIRST_PAGE
    for low, high in old.READ_RANGES:
        assert end <= low or start >= high, (low, high)
    assert journal_format.VERSION == old.VERSION  # an older reader refuses any other version


def test_a_new_journal_reads_for_an_older_sidecar_as_before(tmp_path: Path) -> None:
    import time

    with_load = JournalWriter(tmp_path / "a")
    without = JournalWriter(tmp_path / "b")
    try:
        now = time.monotonic()
        with_load.beat(MEMORY, now=now, load=load_record(now))
        without.beat(MEMORY, now=now)
        new, plain = first_page(with_load), first_page(without)
        seen_new, seen_plain = old.decode_first_page(new), old.decode_first_page(plain)
        assert seen_new["memory_current"] == 300 << 20 and seen_new["memory_max"] == 512 << 20
        assert seen_new["alive_at"] == now and seen_new["pid"] == os.getpid()
        for key in ("memory_current", "memory_max", "inactive_file", "alive_at", "heartbeat_seq"):
            assert seen_new[key] == seen_plain[key], key
        assert journal_format.unpack_load(new) is not None and journal_format.unpack_load(plain) is None
        start, end = journal_format.LOAD_OFFSET, journal_format.LOAD_OFFSET + 2 * journal_format.LOAD.size
        erased = new[:start] + bytes(end - start) + new[end:]
        assert old.decode_first_page(erased) == seen_new  # the record changes nothing an older reader sees
    finally:
        with_load.close()
        without.close()


def test_an_older_apps_journal_reads_here_without_load_figures_which_change_nothing(tmp_path: Path) -> None:
    """An app with a tracer of before load records writes the heartbeat and leaves the record's bytes zero."""
    writer = JournalWriter(tmp_path)
    try:
        writer.beat(MEMORY)  # exactly what an older writer does: no load record
        (info,) = read_writers(tmp_path).writers
        assert info.load is None
        assert (info.memory_current, info.memory_max) == (300 << 20, 512 << 20)
        meter = LoadMeter()
        weight = LoadWeight(LoadWeightConfig(), time_constant=1.0)
        for step in range(5):
            reading = meter.read(read_writers(tmp_path).writers)
            assert reading.cpu is None and reading.occupancy is None
            assert weight.update(reading, float(step)).factor == 100
        assert cpu_check(SidecarConfig(), meter) == []  # no CPU counters: no CPU check, not a false warning
    finally:
        writer.close()


def test_a_new_journal_gives_this_sidecar_its_load_figures(tmp_path: Path) -> None:
    import time

    writer = JournalWriter(tmp_path)
    try:
        declare_capacity(4)
        now = time.monotonic()
        writer.beat(MEMORY, now=now, load=load_record(now))
        (info,) = read_writers(tmp_path).writers
        assert info.load is not None
        assert (info.load.cpu_usage_ns, info.load.cpu_quota_cores, info.load.capacity) == (5_000_000_000, 0.5, 4)
    finally:
        declare_capacity(None)
        writer.close()


def test_a_load_record_no_writer_writes_costs_the_load_figures_only(tmp_path: Path) -> None:
    import time

    writer = JournalWriter(tmp_path)
    try:
        now = time.monotonic()
        writer.beat(MEMORY, now=now, load=load_record(now))
        page = writer.path.read_bytes()
        seq = journal_format.unpack_load(page)
        assert seq is not None
        copy = seq.seq % 2
        at = journal_format.LOAD_OFFSET + copy * journal_format.LOAD.size
        broken = bytearray(page)
        broken[at + 8: at + 16] = b"\xff" * 8  # read_at: a NaN, checksum left stale
        writer.path.write_bytes(bytes(broken))
        (info,) = read_writers(tmp_path).writers
        assert info.memory_current == 300 << 20  # the journal is still read
        assert info.load is None or info.load.seq != seq.seq  # that copy is dropped (the other, if any, used)
        assert not read_writers(tmp_path).skipped
        assert forge  # the other records' forgeries live in test_journal_hostile
    finally:
        writer.close()
