"""Property-based fuzzing of the journal reader: any bytes in one journal, any entries in the directory.

Beside a healthy live writer whose totals are known exactly, hypothesis plants a journal with fields
rewritten behind valid checksums (see tests/cases/journal_forge.py), raw byte damage, truncation, or
a directory full of links, FIFOs, aliases, unreadable and garbage files. Whatever it plants, read_totals
must return (never raise, never block), the healthy writer's total and liveness must read exactly as
without the planted files, the planted files may only appear in `skipped`, each at most once, and no
number anywhere (the snapshot or the archive) may be non-finite or beyond what the planted journal's
own age allows. The budget is bounded so it runs in every `make test`; CANDOR_FUZZ_EXAMPLES raises it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from candor_tracer.cgroup import NO_FIGURES
from candor_tracer.journal.decode import CLOCK_SLACK, CREATION_SLACK
from candor_tracer.journal.format import (
    ARCHIVE_LOCK_NAME,
    ARCHIVE_NAME,
    FIRST_PAGE,
    MAX_SLOTS,
    SLOTS_OFFSET,
    journal_name,
)
from candor_tracer.journal.reader import JournalSnapshot, read_totals
from tests.cases.journal_forge import FIELDS, forge

from candor_tracer.journal.writer import JournalWriter  # isort: skip

EXAMPLES = int(os.environ.get("CANDOR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPECIAL_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e300, -1e290, -1e12, 1e12, 0.0,
                                  -0.0, 5e-324, 1e9, -1.0])
INTS = st.sampled_from([0, 1, 2, 3, 7, 1023, 1024, 1025, 65535, 65536, 65537, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1])
FLOAT_FIELDS = {("header", "created_mono"), ("header", "created_wall"), ("series", "total"), ("slot", "start"),
                ("slot", "end"), ("observed", "observed_at")} | {
    ("heartbeat", f) for f in ("alive_at", "progress_at", "stall_at", "stall_seconds", "loop_turned_at")}
SIGNED = {("heartbeat", f) for f in ("memory_current", "memory_max", "inactive_file")}


@st.composite
def field_edits(draw: st.DrawFn) -> tuple[str, str, object, int, int]:
    record = draw(st.sampled_from(sorted(FIELDS)))
    name = draw(st.sampled_from(FIELDS[record]))
    if record == "header" and name == "magic":
        value: object = draw(st.sampled_from([b"CANDORJ1", b"CANDORJ2", b"\0" * 8]))
    elif (record, name) in FLOAT_FIELDS:
        value = draw(st.one_of(SPECIAL_FLOATS, st.floats(allow_nan=True, allow_infinity=True),
                               st.floats(min_value=-50.0, max_value=50.0).map(lambda d: time.monotonic() + d)))
    elif (record, name) in SIGNED:
        value = draw(st.sampled_from([-(2**63), -2, -1, 0, 1, 2**63 - 1]))
    elif record == "slot" and name == "state":
        value = draw(st.integers(0, 255))
    elif record == "slot" and name == "series":
        value = draw(st.sampled_from([0, 1, 2, 1024, 2**32 - 1]))
    elif record == "header" and name in ("version", "pid", "max_series", "max_slots", "desc_size"):
        value = draw(st.sampled_from([0, 1, 2, 1024, 65536, 262144, os.getpid(), 2**32 - 1]))
    else:
        value = draw(INTS)
    return record, name, value, draw(st.integers(0, 1)), draw(st.integers(0, 3))


@st.composite
def damages(draw: st.DrawFn) -> tuple[str, int, bytes]:
    """Raw damage (checksums then usually fail): overwrite bytes somewhere in use, or truncate."""
    kind = draw(st.sampled_from(["overwrite", "truncate"]))
    region = draw(st.sampled_from([0, 128, 256, 512, 4096, SLOTS_OFFSET - 64 * 1024, SLOTS_OFFSET]))
    at = region + draw(st.integers(0, 255))
    return kind, at, draw(st.binary(min_size=1, max_size=64))


@dataclass
class Scene:
    state: Path
    good: JournalWriter
    expected_good: float  # completed seconds of the healthy writer (its one in-flight trace adds now - start)
    good_start: float
    template: bytes  # a real journal image (a second writer with series, finished and in-flight traces)
    template_name: str  # the name its writer gave it (fresh nonce)


@contextmanager
def scene() -> Iterator[Scene]:
    top = Path(tempfile.mkdtemp(prefix="candor-fuzz-"))
    state = top / "state"
    good = JournalWriter(state)
    try:
        series = good.series_index("job_worked_seconds", "h", (("job", "good"),))
        now = time.monotonic()
        good.end(good.start(series, now - 3.0), series, now)
        start = time.monotonic()
        good.start(series, start)
        good.beat(NO_FIGURES)
        other = JournalWriter(top / "template")
        a = other.series_index("job_worked_seconds", "h", (("job", "victim"),))
        b = other.series_index("other_seconds", "h", ())
        other.end(other.start(a, now - 1.0), a, now)
        other.start(a, now - 0.5)
        other.start(b, now - 0.25)
        slot = other.start(b, now - 0.1)
        other.end(slot, b, now)
        other.beat(NO_FIGURES)
        template = other.path.read_bytes()[: SLOTS_OFFSET + 8 * 32]
        other.close()
        yield Scene(state, good, 3.0, start, template, journal_name(other.pid, other.starttime, "f00d"))
    finally:
        good.close()
        shutil.rmtree(top, ignore_errors=True)


def read_in_time(state: Path) -> JournalSnapshot:
    """read_totals on a thread: blocking (on a FIFO, say) fails the example instead of hanging the run."""
    results: list[JournalSnapshot | BaseException] = []

    def run() -> None:
        try:
            results.append(read_totals(state))
        except BaseException as exc:  # reported below, with the example that caused it
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "read_totals blocked"
    [result] = results
    if isinstance(result, BaseException):
        raise AssertionError(f"read_totals raised {type(result).__name__}: {result}") from result
    return result


def _same_file(journal: str, path: Path) -> bool:
    try:
        return os.path.samefile(journal, path)
    except OSError:
        return False


def check(s: Scene, snapshot: JournalSnapshot, planted: set[str], *, max_seconds: float) -> None:
    good = [x.value for x in snapshot.series if x.labels == (("job", "good"),)]
    # The planted files may add to the good series (a copy of its journal, say), never take from it.
    assert good and good[0] >= s.expected_good + (snapshot.now - s.good_start) - 1e-6
    # The live writer is still one: under its own name, or a planted link to its file met first in the
    # directory's (hash) order, which the reader reads once, under the name it met first.
    assert any(_same_file(w.journal, s.good.path) for w in snapshot.writers), snapshot.writers
    assert len(snapshot.skipped) == len(set(snapshot.skipped))
    assert set(snapshot.skipped) <= planted, set(snapshot.skipped) - planted
    for series in snapshot.series:
        assert math.isfinite(series.value) and 0 <= series.value <= max_seconds, series
    archive = s.state / ARCHIVE_NAME
    if archive.exists() and str(archive) not in planted:
        for item in json.loads(archive.read_text())["series"]:
            assert 0 <= item["nanoseconds"] <= max_seconds * 1e9


def uptime_bound() -> float:
    """The most seconds a journal anyone could forge may claim: every slot busy since boot, three ways over
    (completed, in flight, ending), plus the healthy writer's."""
    return 3 * (time.monotonic() + 2 * (CLOCK_SLACK + CREATION_SLACK)) * MAX_SLOTS + 100.0


@settings(FUZZ, max_examples=EXAMPLES or 300)
@given(edits=st.lists(field_edits(), min_size=1, max_size=4), damage=st.lists(damages(), max_size=2),
       alive=st.booleans())
def test_any_bytes_in_one_journal_cost_that_journal_alone(edits: list[tuple[str, str, object, int, int]],
                                                          damage: list[tuple[str, int, bytes]], alive: bool) -> None:
    with scene() as s:
        image = s.template
        for record, name, value, copy, index in edits:
            try:
                image = forge(image, record, name, value, copy, index)
            except Exception:  # a value the field's struct cannot hold: not a file anyone can write
                continue
        for kind, at, data in damage:
            image = image[:at] if kind == "truncate" else image[:at] + data + image[at + len(data):]
        path = s.state / s.template_name  # the name its writer gave it: the bytes decide, not the name
        path.write_bytes(image)
        holder = None
        if alive:  # a lock holder, as a live writer would be
            import fcntl

            holder = os.open(path, os.O_RDONLY)
            fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            first = read_in_time(s.state)
            check(s, first, {str(path)}, max_seconds=uptime_bound())
            event("planted journal skipped" if first.skipped else "planted journal read")  # both must occur
            second = read_in_time(s.state)
            check(s, second, {str(path)}, max_seconds=uptime_bound())
            before = {(x.name, x.labels): x.value for x in first.series}
            after = {(x.name, x.labels): x.value for x in second.series}
            assert all(after.get(key, -1) >= value for key, value in before.items()), "a counter went backwards"
        finally:
            if holder is not None:
                os.close(holder)


# Stand for the name the template's writer gave its journal and another name its writer could have given
# it (a fresh nonce), so planted bytes are also read under a right name.
OWN_NAME, OTHER_OWN_NAME = "<own name>", "<other own name>"
ENTRY_KINDS = ["forged", "random", "empty", "truncated", "fifo", "directory", "symlink_good", "symlink_dev",
               "symlink_fifo", "dangling", "hardlink_good", "copy_good", "mode000"]
NAMES = st.one_of(
    st.builds(lambda p, t, n: f"journal-{p}-{t}-{n}.cj", st.integers(0, 2**40), st.integers(0, 2**40),
              st.sampled_from(["a", "ff", "0123abcd", "deadbeef00"])),
    st.sampled_from([ARCHIVE_NAME, ARCHIVE_LOCK_NAME, ".journal-1-aa.tmp", f".{ARCHIVE_NAME}.1.tmp", "x", "..journal",
                     "journal-1-1-a.cj.tmp", OWN_NAME, OTHER_OWN_NAME]),
)



@settings(FUZZ, max_examples=EXAMPLES // 3 or 40)
@given(entries=st.lists(st.tuples(NAMES, st.sampled_from(ENTRY_KINDS), st.lists(field_edits(), max_size=2),
                                  st.binary(max_size=FIRST_PAGE + 64)),
                        min_size=1, max_size=12, unique_by=lambda e: e[0]),
       many=st.sampled_from([0, 0, 0, 600]))
def test_any_entries_in_the_state_directory_cost_those_entries_alone(
        entries: list[tuple[str, str, list[tuple[str, str, object, int, int]], bytes]], many: int) -> None:
    with scene() as s:
        planted: set[str] = set()
        for name, kind, edits, raw in entries:
            own = {OWN_NAME: s.template_name, OTHER_OWN_NAME: s.template_name.replace("-f00d.cj", "-beef.cj")}
            path = s.state / own.get(name, name)
            planted.add(str(path))
            good_name = s.good.path.name
            if kind == "forged":
                image = s.template
                for record, field, value, copy, index in edits:
                    try:
                        image = forge(image, record, field, value, copy, index)
                    except Exception:
                        continue
                path.write_bytes(image)
            elif kind == "random":
                path.write_bytes(raw)
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "truncated":
                path.write_bytes(s.template[: len(raw) + 1])
            elif kind == "fifo":
                os.mkfifo(path, 0o444)
            elif kind == "directory":
                path.mkdir()
            elif kind == "symlink_good":
                path.symlink_to(good_name)
            elif kind == "symlink_dev":
                path.symlink_to("/dev/zero")
            elif kind == "symlink_fifo":
                os.mkfifo(s.state.parent / "fifo", 0o444) if not (s.state.parent / "fifo").exists() else None
                path.symlink_to(s.state.parent / "fifo")
            elif kind == "dangling":
                path.symlink_to(s.state / "nowhere")
            elif kind == "hardlink_good":
                os.link(s.good.path, path)
            elif kind == "copy_good":
                shutil.copyfile(s.good.path, path)
            elif kind == "mode000":
                path.write_bytes(s.template)
                path.chmod(0o000)
        for i in range(many):
            bad = s.state / f"journal-{i}-9-ee.cj"
            bad.write_bytes(b"\0" * (i % 300))
            planted.add(str(bad))
        planted.add(str(s.state / ARCHIVE_NAME))  # a planted archive may be skipped as corrupt
        snapshot = read_in_time(s.state)
        check(s, snapshot, planted, max_seconds=uptime_bound())
        again = read_in_time(s.state)
        check(s, again, planted, max_seconds=uptime_bound())
