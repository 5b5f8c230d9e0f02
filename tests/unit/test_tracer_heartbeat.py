"""What the sidecar's deadlock and memory checks read from a writer: heartbeats, memory, event-loop stalls."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from candor_tracer import MemoryFigures, Tracer, set_memory_source, watch_event_loop
from candor_tracer.cgroup import MemoryReader
from candor_tracer.heartbeat import HeartbeatThread, next_beat
from candor_tracer.journal.reader import WriterInfo, read_totals
from candor_tracer.journal.writer import JournalWriter


@pytest.fixture(autouse=True)
def default_memory_source() -> Any:
    """Every test starts and ends with the default (cgroup) memory source: it is process-wide."""
    set_memory_source(None)
    yield
    set_memory_source(None)


def fake_cgroup(root: Path, current: str | None, limit: str | None, stat: str | None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("memory.current", current), ("memory.max", limit), ("memory.stat", stat)):
        if text is not None:
            (root / name).write_text(text)


def test_memory_figures_come_from_the_processes_own_cgroup(tmp_path: Path) -> None:
    fake_cgroup(tmp_path / "kubepods" / "pod1", "104857600\n", "209715200\n",
                "anon 1000\nfile 5000\ninactive_file 40960\nactive_file 10\n")
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text("0::/kubepods/pod1\n")
    figures = MemoryReader(root=tmp_path, proc_cgroup=proc_cgroup).read()
    assert (figures.current, figures.limit, figures.inactive_file) == (104857600, 209715200, 40960)


def test_unlimited_or_absent_memory_figures_are_none(tmp_path: Path) -> None:
    fake_cgroup(tmp_path / "a", "5000\n", "max\n", "anon 1\n")
    figures = MemoryReader(root=tmp_path / "a", proc_cgroup=tmp_path / "missing").read()
    assert (figures.current, figures.limit, figures.inactive_file) == (5000, None, None)
    nothing = MemoryReader(root=tmp_path / "no-cgroup-v2", proc_cgroup=tmp_path / "missing").read()
    assert (nothing.current, nothing.limit, nothing.inactive_file) == (None, None, None)


def fake_cgroup_v1(directory: Path, usage: str, limit: str) -> None:
    directory.mkdir(parents=True)
    (directory / "memory.usage_in_bytes").write_text(usage)
    (directory / "memory.limit_in_bytes").write_text(limit)
    # v1's memory.stat has the cgroup's own figures and the hierarchy's totals; the totals are what count.
    (directory / "memory.stat").write_text("cache 9\ninactive_file 7\ntotal_cache 90\ntotal_inactive_file 70\n")


def test_cgroup_v1_figures_on_a_node_that_still_runs_v1(tmp_path: Path) -> None:
    fake_cgroup_v1(tmp_path / "memory" / "kubepods" / "pod1" / "c1", "104857600\n", "268435456\n")
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text("12:pids:/kubepods/pod1/c1\n9:memory:/kubepods/pod1/c1\n1:name=systemd:/x\n0::/\n")
    figures = MemoryReader(root=tmp_path, proc_cgroup=proc_cgroup).read()
    assert (figures.current, figures.limit, figures.inactive_file) == (104857600, 268435456, 70)


def test_cgroup_v1_inside_a_container_and_unlimited(tmp_path: Path) -> None:
    # In a container the host's path is not visible: its own cgroup is the memory mount's root.
    fake_cgroup_v1(tmp_path / "memory", "5000\n", "9223372036854771712\n")
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text("9:memory:/candor/kubepods/besteffort/pod9/abc\n")
    figures = MemoryReader(root=tmp_path, proc_cgroup=proc_cgroup).read()
    assert (figures.current, figures.limit, figures.inactive_file) == (5000, None, 70)


def only_writer(state_dir: Path) -> WriterInfo:
    [writer] = read_totals(state_dir).writers
    return writer


def test_the_heartbeat_thread_carries_memory_figures_about_every_interval(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    fake_cgroup(cgroup, "1000\n", "4000\n", "inactive_file 300\n")
    writer = JournalWriter(tmp_path / "state")
    beats = HeartbeatThread(writer, 0.1, MemoryReader(root=cgroup, proc_cgroup=tmp_path / "none"))
    try:
        info = only_writer(tmp_path / "state")
        assert (info.memory_current, info.memory_max, info.inactive_file) == (1000, 4000, 300)
        (cgroup / "memory.current").write_text("2500\n")
        info = wait_for(lambda: (i := only_writer(tmp_path / "state")).memory_current == 2500 and i, 5)
        assert info.alive_at is not None and time.monotonic() - info.alive_at < 1.0
        assert info.heartbeat == info.alive_at  # no explicit heartbeat(): liveness is the heartbeat
        assert info.progress_at is None
    finally:
        beats.stop()
        writer.close()


def wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_explicit_heartbeats_become_the_writers_heartbeat(tmp_path: Path) -> None:
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.05)
    try:
        tracer.heartbeat()
        marked = time.monotonic()
        info = wait_for(lambda: (i := only_writer(tmp_path)).progress_at is not None and i, 5)
        assert info.progress_at is not None and info.progress_at <= marked
        assert info.heartbeat == info.progress_at
        # The app stops calling heartbeat(): its heartbeat stays put while liveness moves on.
        later = wait_for(lambda: (i := only_writer(tmp_path)).alive_at is not None and i.alive_at > marked + 0.1 and i,
                         5)
        assert later.heartbeat == info.progress_at
    finally:
        tracer.close()


def test_in_flight_count_and_oldest_start_are_reported(tmp_path: Path) -> None:
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.2)
    counter = Counter("job_worked_seconds_total", "h", ["job"], registry=CollectorRegistry())
    try:
        before = time.monotonic()
        with tracer.trace(counter, job="a"):
            inside = time.monotonic()
            time.sleep(0.01)
            with tracer.trace(counter, job="b"):
                info = only_writer(tmp_path)
        assert info.inflight == 2
        assert info.oldest_inflight_start is not None and before <= info.oldest_inflight_start <= inside
        assert only_writer(tmp_path).inflight == 0
    finally:
        tracer.close()


def test_a_blocked_event_loop_is_recorded_as_a_stall(tmp_path: Path) -> None:
    """Bounds come from clocks read around the block, so a busy machine widens them instead of failing."""
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.2)
    during: list[WriterInfo] = []

    async def app() -> tuple[float, float, float]:
        with watch_event_loop(threshold=0.4, tracer=tracer):  # opens the journal: nothing traced yet
            await asyncio.sleep(0.5)
            turning = only_writer(tmp_path)
            assert turning.loop_turned_at is not None and time.monotonic() - turning.loop_turned_at < 1.0
            observer = threading.Timer(1.0, lambda: during.append(only_writer(tmp_path)))
            observer.start()
            blocked_at = time.monotonic()
            time.sleep(1.5)  # a blocking call inside a coroutine: the loop stops turning
            unblocked_at = time.monotonic()
            observer.join()
            await asyncio.sleep(0.3)
            return blocked_at, unblocked_at, time.monotonic()

    try:
        blocked_at, unblocked_at, resumed_by = asyncio.run(app())
        [seen] = during
        assert seen.last_stall_at is not None and seen.last_stall_seconds is not None
        assert blocked_at - 0.5 <= seen.last_stall_at <= blocked_at  # the loop's last turn before the block
        assert seen.last_stall_seconds >= 0.4  # reported while the stall was still going on
        final = only_writer(tmp_path)
        assert final.last_stall_at == seen.last_stall_at
        assert final.last_stall_seconds is not None
        assert unblocked_at - seen.last_stall_at <= final.last_stall_seconds <= resumed_by - seen.last_stall_at
        assert final.loop_turned_at is not None and final.loop_turned_at >= unblocked_at
    finally:
        tracer.close()


def test_watch_event_loop_needs_a_loop_and_a_positive_threshold() -> None:
    with pytest.raises(RuntimeError):
        watch_event_loop()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="threshold must be > 0"):
            watch_event_loop(loop, threshold=0)
    finally:
        loop.close()


# --- the app's memory source ---------------------------------------------------------------


def test_a_custom_memory_source_reaches_the_journal_at_every_beat(tmp_path: Path) -> None:
    used = [100_000_000]
    set_memory_source(lambda: MemoryFigures(current=used[0], limit=250_000_000, inactive_file=5_000))
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.05)
    try:
        tracer.open_journal()
        info = only_writer(tmp_path)
        assert (info.memory_current, info.memory_max, info.inactive_file) == (100_000_000, 250_000_000, 5_000)
        used[0] = 240_000_000  # the app grows: the next beats say so
        info = wait_for(lambda: (i := only_writer(tmp_path)).memory_current == 240_000_000 and i, 5)
        assert info.memory_max == 250_000_000
    finally:
        tracer.close()


def test_a_source_set_while_the_heartbeat_runs_takes_over_at_the_next_beat(tmp_path: Path) -> None:
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.05)
    try:
        tracer.open_journal()  # the heartbeat thread is running with the default source
        set_memory_source(lambda: MemoryFigures(current=7_000, limit=9_000))
        info = wait_for(lambda: (i := only_writer(tmp_path)).memory_current == 7_000 and i, 5)
        assert (info.memory_max, info.inactive_file) == (9_000, None)
    finally:
        tracer.close()


def test_a_failing_memory_source_never_stops_the_heartbeat(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = [True]
    calls: list[float] = []

    def flaky() -> MemoryFigures:
        calls.append(time.monotonic())
        if broken[0]:
            raise OSError("statm vanished")
        return MemoryFigures(current=1_000, limit=2_000)

    caplog.set_level(logging.WARNING, logger="candor_tracer")
    set_memory_source(flaky)
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.05)
    try:
        tracer.open_journal()
        first = only_writer(tmp_path)
        assert first.alive_at is not None
        wait_for(lambda: len(calls) >= 5, 5)
        later = only_writer(tmp_path)
        assert later.alive_at is not None and later.alive_at > first.alive_at  # still beating
        assert (later.memory_current, later.memory_max, later.inactive_file) == (None, None, None)
        warnings = [r.getMessage() for r in caplog.records if "memory source" in r.getMessage()]
        assert len(warnings) == 1 and "OSError: statm vanished" in warnings[0], warnings
        broken[0] = False  # the source recovers: figures are back at the next beat
        wait_for(lambda: only_writer(tmp_path).memory_current == 1_000, 5)
    finally:
        tracer.close()


def test_a_source_returning_the_wrong_thing_gives_no_figures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="candor_tracer")
    set_memory_source(lambda: {"current": 5})  # type: ignore[arg-type,return-value]  # the mistake under test
    writer = JournalWriter(tmp_path)
    beats = HeartbeatThread(writer, 0.05)
    try:
        info = only_writer(tmp_path)
        assert (info.memory_current, info.memory_max) == (None, None)
        assert any("returned dict, not MemoryFigures" in r.getMessage() for r in caplog.records)
    finally:
        beats.stop()
        writer.close()


def test_without_a_source_the_figures_are_the_cgroup_ones(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    fake_cgroup(cgroup, "1000\n", "4000\n", "inactive_file 300\n")
    writer = JournalWriter(tmp_path / "state")
    beats = HeartbeatThread(writer, 0.05, MemoryReader(root=cgroup, proc_cgroup=tmp_path / "none"))
    try:
        assert only_writer(tmp_path / "state").memory_current == 1000
        set_memory_source(lambda: MemoryFigures(current=1, limit=2))
        wait_for(lambda: only_writer(tmp_path / "state").memory_current == 1, 5)
        set_memory_source(None)  # back to the default
        info = wait_for(lambda: (i := only_writer(tmp_path / "state")).memory_current == 1000 and i, 5)
        assert (info.memory_max, info.inactive_file) == (4000, 300)
    finally:
        beats.stop()
        writer.close()


def test_a_tracer_without_a_source_reports_this_hosts_cgroup(tmp_path: Path) -> None:
    """The default is this process's own cgroup v2 (all None on a cgroup v1 host such as some CI machines)."""
    expected = MemoryReader().read()
    tracer = Tracer(state_dir=tmp_path, heartbeat_interval=0.05)
    try:
        tracer.open_journal()
        info = only_writer(tmp_path)
        assert info.memory_max == expected.limit
        assert (info.memory_current is None) == (expected.current is None)
    finally:
        tracer.close()


@pytest.mark.parametrize(("field", "value"), [("current", -1), ("limit", 1.5), ("inactive_file", True),
                                              ("current", 2**63), ("limit", "512Mi")])
def test_memory_figures_reject_what_the_journal_cannot_hold(field: str, value: object) -> None:
    figures: dict[str, Any] = {"current": 1, "limit": 2, "inactive_file": 0, field: value}
    with pytest.raises(ValueError, match=f"MemoryFigures.{field} must be None or an int"):
        MemoryFigures(**figures)


def test_set_memory_source_needs_a_function() -> None:
    with pytest.raises(TypeError, match="takes a function returning MemoryFigures, or None; got MemoryFigures"):
        set_memory_source(MemoryFigures(1, 2))  # type: ignore[arg-type]  # the figures instead of a source


# --- beats on a fixed grid -----------------------------------------------------------------


def test_the_next_beat_is_the_next_grid_point_and_a_long_stall_skips_missed_ones() -> None:
    assert next_beat(0, 0.001) == 1  # on time: wait for the next point
    assert next_beat(4, 4.3) == 5
    assert next_beat(4, 5.9) == 5  # a little late (less than an interval): beat at once, stay on the grid
    assert next_beat(4, 6.0) == 5
    assert next_beat(4, 9.4) == 9  # stopped for several intervals: one beat now, then 10, 11, ...
    assert next_beat(9, 9.4) == 10


def test_a_slow_memory_source_does_not_stretch_the_heartbeat_period(tmp_path: Path) -> None:
    """Beat times are the source's call times; a beat taking 40 % of the interval must not add up."""
    interval, slowness = 0.05, 0.02
    called: list[float] = []

    def slow_source() -> MemoryFigures:
        called.append(time.monotonic())
        time.sleep(slowness)
        return MemoryFigures(current=1, limit=2)

    set_memory_source(slow_source)
    writer = JournalWriter(tmp_path)
    beats = HeartbeatThread(writer, interval)
    try:
        wait_for(lambda: len(called) >= 25, 10)
    finally:
        beats.stop()
        writer.close()
    span = called[-1] - called[0]
    beats_on_grid = round(span / interval)
    # Sleeping a full interval after each beat would give a period of >= 0.07 s, i.e. 40 % long.
    assert span / (len(called) - 1) < interval * 1.15, (span, len(called))
    assert beats_on_grid >= len(called) - 1  # never more beats than grid points (no bursts)
