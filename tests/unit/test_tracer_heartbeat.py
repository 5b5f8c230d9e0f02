"""What the sidecar's deadlock and memory checks read from a writer: heartbeats, memory, event-loop stalls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from candor_tracer import Tracer, watch_event_loop
from candor_tracer.cgroup import MemoryReader
from candor_tracer.heartbeat import HeartbeatThread
from candor_tracer.journal import WriterInfo, read_totals
from candor_tracer.journal_writer import JournalWriter


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
