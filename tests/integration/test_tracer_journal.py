"""Journal mode with real processes and real signals: SIGKILL, fork, reader restarts, PID reuse."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from candor_tracer.journal.decode import read_journal
from candor_tracer.journal.reader import JournalSnapshot, read_totals
from harness.apps.tracer_apps import (
    next_message,
    read_in_new_process,
    series_value,
    start_app,
    stop_app,
)
from harness.processes.pid_namespace import PREFIX, needs_pid_namespace
from harness.processes.waiting import wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5

LONG_JOB_APP = """
    short_before = time.monotonic()
    with trace(JOB, job="short"):
        short_inside = time.monotonic()
        time.sleep(0.3)
        short_inner = time.monotonic() - short_inside
    short_outer = time.monotonic() - short_before
    before = time.monotonic()
    with trace(JOB, job="long"):
        say(before=before, inside=time.monotonic(), short_inner=short_inner, short_outer=short_outer)
        time.sleep(10)
    say(finished=time.monotonic())
"""

IDLE_WRITER_APP = """
    with trace(JOB, job="other"):
        say(inside=time.monotonic())
        sys.stdin.read()
"""


def test_sigkill_three_seconds_into_a_ten_second_job_loses_at_most_one_heartbeat(tmp_path: Path) -> None:
    app = start_app(LONG_JOB_APP, tmp_path, heartbeat_interval=HEARTBEAT)
    other = start_app(IDLE_WRITER_APP, tmp_path, heartbeat_interval=HEARTBEAT)
    try:
        started = next_message(app)
        next_message(other)
        time.sleep(max(0.0, started["inside"] + 3.0 - time.monotonic()))
        os.kill(app.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        app.wait(timeout=10)
        assert app.returncode == -signal.SIGKILL
        last_beat = _last_heartbeat(tmp_path, app.pid)

        # Five reader restarts: each a new process, as a restarted sidecar.
        readings = [read_in_new_process(tmp_path) for _ in range(5)]
        long_values = [series_value(r, "long") for r in readings]
        other_values = [series_value(r, "other") for r in readings]
        assert long_values == sorted(long_values), f"total went backwards across restarts: {long_values}"
        assert other_values == sorted(other_values), f"live writer's total went backwards: {other_values}"
        assert other_values[-1] > other_values[0]  # the live writer's in-flight time keeps counting

        long_total = long_values[0]
        # Closed at the last heartbeat: exactly (last beat - trace start), the start bracketed by the app.
        assert last_beat - started["inside"] - 1e-6 <= long_total <= last_beat - started["before"] + 1e-6, long_total
        # That beat was at most one interval before the kill (plus scheduling delay on a busy machine).
        assert killed_at - last_beat <= HEARTBEAT + 0.3, killed_at - last_beat
        worked = killed_at - started["before"]  # the job's real seconds, at most
        assert worked - HEARTBEAT - 0.3 <= long_total <= worked
        assert abs(long_total - 3.0) <= HEARTBEAT + 0.3
        assert long_values[-1] == pytest.approx(long_total, abs=1e-9)  # folded once, never again
        assert started["short_inner"] - 1e-6 <= series_value(readings[0], "short") <= started["short_outer"] + 1e-6

        # The dead journal is folded into the archive and removed; the live one stays.
        names = sorted(p.name for p in tmp_path.iterdir())
        assert "archive.json" in names
        journals = [n for n in names if n.startswith("journal-")]
        assert len(journals) == 1 and journals[0].startswith(f"journal-{other.pid}-")
        assert [w[1] for w in readings[-1]["writers"]] == [other.pid]
    finally:
        stop_app(app)
        stop_app(other)


def _last_heartbeat(state_dir: Path, pid: int) -> float:
    """The dead writer's last heartbeat, read straight from its journal before any reader folds it."""
    [journal] = state_dir.glob(f"journal-{pid}-*.cj")
    fd = os.open(journal, os.O_RDONLY)
    try:
        return read_journal(fd, live=False).heartbeat.alive_at
    finally:
        os.close(fd)


MANY_SERIES_APP = """
    import threading
    for i in range(3):
        with trace(JOB, job=f"done{i}"):
            time.sleep(0.01 * (i + 1))
    for i in range(3):
        threading.Thread(target=lambda i=i: trace(JOB, job=f"open{i % 2}")(sys.stdin.read)(), daemon=True).start()
    with trace(JOB, job="other"):
        say(inside=time.monotonic())
        sys.stdin.read()
"""


def test_a_read_just_before_the_kill_is_never_undone_by_the_fold(tmp_path: Path) -> None:
    """The fold closes in-flight time no earlier than the last reported read, even across a reader restart.

    With a slow heartbeat the last read is well after the last heartbeat: without that rule the folded
    total would be lower than the one already reported (a counter reset for Prometheus).
    """
    apps = [start_app(MANY_SERIES_APP, tmp_path, heartbeat_interval=2.0) for _ in range(3)]
    try:
        for app in apps:
            next_message(app)
        time.sleep(1.0)
        reported = read_in_new_process(tmp_path)
        for app in apps[:2]:
            os.kill(app.pid, signal.SIGKILL)
            app.wait(timeout=10)
        after = read_in_new_process(tmp_path)
        assert len(after["writers"]) == 1
        before_values = {tuple(map(tuple, labels)): value for _, labels, value in reported["series"]}
        after_values = {tuple(map(tuple, labels)): value for _, labels, value in after["series"]}
        assert len(before_values) == 6 and set(before_values) == set(after_values)
        for key, value in before_values.items():
            assert after_values[key] >= value, (key, value, after_values[key])  # exact: never lower
        for key in ((("job", "done0"),), (("job", "done1"),), (("job", "done2"),)):
            assert after_values[key] == before_values[key]  # completed work: identical to the nanosecond
    finally:
        for app in apps:
            stop_app(app)


def test_a_reader_dying_between_archive_and_unlink_does_not_count_twice(tmp_path: Path) -> None:
    app = start_app(LONG_JOB_APP, tmp_path, heartbeat_interval=HEARTBEAT)
    try:
        next_message(app)
        time.sleep(1.0)
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=10)
        journal = next(tmp_path.glob("journal-*.cj"))
        saved = tmp_path / "saved.bin"
        shutil.copyfile(journal, saved)
        first = read_totals(tmp_path, now=time.monotonic())
        assert not journal.exists()
        os.replace(saved, journal)  # as if the reader died after renaming the archive, before the unlink
        second = read_in_new_process(tmp_path)
        assert not journal.exists()
        long_first = next(s.value for s in first.series if s.labels == (("job", "long"),))
        assert series_value(second, "long") == pytest.approx(long_first, abs=1e-9)
    finally:
        stop_app(app)


FORKING_APP = """
    # Every trace is bracketed: outer = clocks read around the `with`, inner = read just inside it.
    child = None
    parent_before = time.monotonic()
    with trace(JOB, job="parent"):  # in flight while forking: the children must not count it
        parent_inside = time.monotonic()
        for index in range(4):
            if os.fork() == 0:
                child = index
                break
        if child is not None:
            inner, outer = [], []
            for _ in range(2):
                before = time.monotonic()
                with trace(JOB, job="worker"):
                    start = time.monotonic()
                    time.sleep(0.8 + 0.2 * child)
                    inner.append(time.monotonic() - start)
                outer.append(time.monotonic() - before)
        else:
            say(forked=True, journal=str(default_tracer.journal_path))
            sys.stdin.readline()  # the test reads the journals while everyone works
            parent_last = time.monotonic()
    if child is not None:  # left the parent's trace in the child: ignored there
        say(child=child, pid=os.getpid(), journal=str(default_tracer.journal_path), inner=inner, outer=outer)
        os._exit(0)
    parent_outer = time.monotonic() - parent_before
    parent_inner = parent_last - parent_inside
    for _ in range(4):
        os.wait()
    say(parent_inner=parent_inner, parent_outer=parent_outer)
    sys.stdin.read()
"""


def test_four_forked_workers_each_get_a_journal_and_the_sum_is_right(tmp_path: Path) -> None:
    app = start_app(FORKING_APP, tmp_path, heartbeat_interval=HEARTBEAT)
    try:
        forked = next_message(app)

        def five_writers() -> JournalSnapshot | None:
            snap = read_totals(tmp_path)
            return snap if len(snap.writers) == 5 else None

        snapshot = wait_until(five_writers, timeout=20, what="parent and 4 children writing journals")
        assert len({w.journal for w in snapshot.writers}) == 5
        assert len({w.pid for w in snapshot.writers}) == 5
        assert forked["journal"] in {w.journal for w in snapshot.writers}
        children = [next_message(app) for _ in range(4)]
        assert app.stdin is not None
        app.stdin.write("go\n")
        app.stdin.flush()
        parent = next_message(app)

        final = read_totals(tmp_path)
        workers = next(s.value for s in final.series if s.labels == (("job", "worker"),))
        parent_total = next(s.value for s in final.series if s.labels == (("job", "parent"),))
        inner = sum(sum(c["inner"]) for c in children)
        outer = sum(sum(c["outer"]) for c in children)
        assert inner - 1e-6 <= workers <= outer + 1e-6, (inner, workers, outer)
        assert parent["parent_inner"] - 1e-6 <= parent_total <= parent["parent_outer"] + 1e-6
        assert len({c["journal"] for c in children}) == 4
        assert all(c["journal"] != forked["journal"] for c in children)
        assert [w.pid for w in final.writers] == [app.pid]  # the children exited: folded
    finally:
        stop_app(app)


POOL_APP = """
    import multiprocessing

    def job(seconds):
        before = time.monotonic()
        with trace(JOB, job="pool"):
            start = time.monotonic()
            time.sleep(seconds)
            inner = time.monotonic() - start
        return inner, time.monotonic() - before

    with multiprocessing.get_context("fork").Pool(3) as pool:
        durations = pool.map(job, [0.2, 0.3, 0.4, 0.5, 0.2, 0.3])
    say(durations=durations)
"""


def test_multiprocessing_fork_pool_workers_are_counted(tmp_path: Path) -> None:
    app = start_app(POOL_APP, tmp_path, heartbeat_interval=HEARTBEAT)
    try:
        durations = next_message(app)["durations"]
        app.communicate(timeout=30)
        snapshot = read_totals(tmp_path)
        [pool] = [s for s in snapshot.series if s.labels == (("job", "pool"),)]
        inner, outer = sum(d[0] for d in durations), sum(d[1] for d in durations)
        assert inner - 1e-6 <= pool.value <= outer + 1e-6, (inner, pool.value, outer)
        assert snapshot.writers == ()  # the pool and the app have exited: every journal folded
    finally:
        stop_app(app)


def _inner_pid(outer: int) -> int:
    """The host pid of the process unshare started (its only child)."""
    def child() -> int | None:
        try:
            text = Path(f"/proc/{outer}/task/{outer}/children").read_text().split()
        except OSError:
            return None
        return int(text[0]) if text else None
    pid: int = wait_until(child, timeout=10, what="the app inside the PID namespace")
    return pid


PID_APP = """
    before = time.monotonic()
    with trace(JOB, job="done"):
        time.sleep(0.2)
    done = time.monotonic() - before
    with trace(JOB, job="open"):
        say(pid=os.getpid(), journal=str(default_tracer.journal_path), inside=time.monotonic(), done=done)
        sys.stdin.read()
"""


@needs_pid_namespace
def test_a_reused_pid_never_collides_with_a_dead_or_live_journal(tmp_path: Path) -> None:
    """Processes in fresh PID namespaces all run as pid 1, like app containers of one pod."""
    first = start_app(PID_APP, tmp_path, heartbeat_interval=HEARTBEAT, prefix=PREFIX)
    second = third = None
    try:
        one = next_message(first)
        assert one["pid"] == 1
        time.sleep(1.0)
        os.kill(_inner_pid(first.pid), signal.SIGKILL)  # dies holding an open trace, journal not folded yet
        killed_after = time.monotonic() - one["inside"]
        first.wait(timeout=10)
        second = start_app(PID_APP, tmp_path, heartbeat_interval=HEARTBEAT, prefix=PREFIX)
        third = start_app(PID_APP, tmp_path, heartbeat_interval=HEARTBEAT, prefix=PREFIX)
        two, three = next_message(second), next_message(third)
        assert two["pid"] == three["pid"] == 1
        assert len({one["journal"], two["journal"], three["journal"]}) == 3
        assert all(Path(j).name.startswith("journal-1-") for j in (one["journal"], two["journal"], three["journal"]))
        snapshot = read_totals(tmp_path)
        assert len(snapshot.writers) == 2  # the dead one was folded, the two live ones are read
        done = next(s.value for s in snapshot.series if s.labels == (("job", "done"),))
        measured = one["done"] + two["done"] + three["done"]
        assert measured - 0.05 <= done <= measured, (done, measured)
        open_total = next(s.value for s in snapshot.series if s.labels == (("job", "open"),))
        first_part = open_total - (snapshot.now - two["inside"]) - (snapshot.now - three["inside"])
        # The killed one's open trace was closed at its last heartbeat (scheduling slack for a busy machine).
        assert killed_after - HEARTBEAT - 0.3 <= first_part <= killed_after + 0.01, (first_part, killed_after)
    finally:
        for proc in (first, second, third):
            if proc is not None:
                stop_app(proc)
