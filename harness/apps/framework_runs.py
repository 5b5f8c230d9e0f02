"""What the job-framework tests measure: each worker's own busy time per job, the deaths of the processes.

The test apps report the start and end of every job from *outside* Candor's trace (a Celery receiver that runs
before the tracer's at prerun and after it at postrun, a subclass of the traced RQ worker, a WSGI middleware
around the traced app) to an events file beside the state directory: one JSON line per event, written with
one O_APPEND write (no round trip inside the measured span), times from CLOCK_MONOTONIC, which every process
on the machine shares. So a trace never counts more than the measured span, and the journals'
total is checked against it. A killed job cannot say when it stopped: `DeathWatch` holds a pidfd for each
process that started a job and records the moment the kernel reports it exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from candor_tracer.journal.reader import read_totals
from harness.apps.tracer_apps import app_env

EVENTS_ENV = "CANDOR_TEST_EVENTS"
_events_fd: dict[int, int] = {}  # pid -> descriptor: a forked child opens its own


def events_path(state_dir: Path) -> Path:
    return state_dir.parent / "events.jsonl"


def report(kind: str, job_id: str, name: str) -> None:
    """Record a job's start or end, with this process's pid and the time, in the test's events file."""
    at = time.monotonic()
    fd = _events_fd.get(os.getpid())
    if fd is None:
        fd = _events_fd[os.getpid()] = os.open(os.environ[EVENTS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = json.dumps({"kind": kind, "id": job_id, "name": name, "pid": os.getpid(), "at": at}) + "\n"
    os.write(fd, line.encode())


def busy(seconds: float, on_end: Callable[[float], None] | None = None) -> float:
    """The body of every test job: sleep. `on_end(seconds)` runs when it ends, also when an exception (a
    timeout raised inside the job) interrupts it, as an app's own end-of-job accounting would."""
    started = time.monotonic()
    try:
        time.sleep(seconds)
    finally:
        if on_end is not None:
            on_end(time.monotonic() - started)
    return time.monotonic() - started


class DeathWatch:
    """Exit times of watched processes, taken by a thread blocked in epoll on their pidfds."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._fds: dict[int, int] = {}  # pidfd -> pid
        self.died: dict[int, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        if pid in self._fds.values() or pid in self.died:
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # already reaped: it died before now
            self.died.setdefault(pid, time.monotonic())
            return
        self._fds[fd] = pid
        self._epoll.register(fd, select.EPOLLIN)

    def _run(self) -> None:
        while not self._stop:
            for fd, _ in self._epoll.poll():
                at = time.monotonic()
                if fd == self._wake_r:
                    continue
                pid = self._fds.pop(fd, None)
                if pid is not None:
                    self.died.setdefault(pid, at)
                    self._epoll.unregister(fd)
                    os.close(fd)

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in list(self._fds):
            os.close(fd)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


@dataclass
class Job:
    id: str
    name: str
    pid: int
    start: float
    end: float | None = None


@dataclass
class Run:
    """The events of one test run, read from Redis, and the readings of the journals taken meanwhile."""

    state_dir: Path
    deaths: DeathWatch | None  # None when jobs run in another PID namespace: their pids mean nothing here
    jobs: dict[str, Job] = field(default_factory=dict)
    _read: int = 0  # bytes of the events file taken so far
    readings: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = field(default_factory=list)

    def poll(self) -> None:
        """Take new events (watching every pid that starts a job) and one reading of the journals."""
        try:
            with events_path(self.state_dir).open("rb") as events:
                events.seek(self._read)
                chunk = events.read()
        except FileNotFoundError:
            chunk = b""
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._read += len(complete)
        for line in complete.splitlines():
            event = json.loads(line)
            if event["kind"] == "start":
                self.jobs[event["id"]] = Job(event["id"], event["name"], event["pid"], event["at"])
                if self.deaths is not None:
                    self.deaths.watch(event["pid"])
            elif event["kind"] == "end":
                self.jobs[event["id"]].end = event["at"]
        snapshot = read_totals(self.state_dir)
        self.readings.append({(s.name, s.labels): s.value for s in snapshot.series})

    def started(self, job_id: str) -> Job | None:
        self.poll()
        return self.jobs.get(job_id)

    def ended(self, job_id: str) -> Job | None:
        job = self.started(job_id)
        return job if job is not None and job.end is not None else None

    def dead(self, job_id: str) -> float | None:
        job = self.started(job_id)
        assert self.deaths is not None
        return self.deaths.died.get(job.pid) if job is not None else None

    def measured(self, name: str, died: dict[str, float] | None = None) -> tuple[float, float, int]:
        """(seconds of jobs that ended, seconds of jobs whose process died first, number of those deaths).

        `died` gives the death time of jobs by id where no DeathWatch could see it."""
        ended = killed = 0.0
        kills = 0
        for job in self.jobs.values():
            if job.name != name:
                continue
            if job.end is not None:
                ended += job.end - job.start
            else:
                death = (died or {}).get(job.id)
                if death is None and self.deaths is not None:
                    death = self.deaths.died.get(job.pid)
                assert death is not None, f"job {job.id} neither ended nor lost its process {job.pid}"
                killed += death - job.start
                kills += 1
        return ended, killed, kills

    def assert_never_decreasing(self) -> None:
        previous: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for number, reading in enumerate(self.readings):
            for key, value in previous.items():
                now = reading.get(key, 0.0)
                assert now >= value, f"{key} went from {value} to {now} at reading {number}"
            previous = reading


# The measured span of a job encloses its trace; what lies between them, per job, is the framework's and the
# report's work (a Redis round trip, signal dispatch), a few ms, more on a machine shared by many test runs.
# Test jobs last 0.5 s or more, so a job lost whole or counted twice never fits within these bounds.
PER_JOB = 0.05
CLOCK = 0.02  # the reader's time vs the reports' (both CLOCK_MONOTONIC, read at different moments)


def assert_counted(counted: float, worked: float, killed: float, kills: int, jobs: int, heartbeat: float) -> None:
    """The journals' total against the measured busy time: at most one heartbeat lost per kill, nothing extra."""
    measured = worked + killed
    lowest, highest = measured - kills * heartbeat - jobs * PER_JOB - CLOCK, measured + CLOCK
    assert lowest <= counted <= highest, (
        f"counted {counted:.3f} s, measured {measured:.3f} s ({worked:.3f} s of jobs that ended, {killed:.3f} s "
        f"of {kills} killed), allowed [{lowest:.3f}, {highest:.3f}]")


def total(state_dir: Path, name: str, **labels: str) -> float:
    for series in read_totals(state_dir).series:
        if series.name == name and dict(series.labels) == labels:
            return series.value
    return 0.0


@contextlib.contextmanager
def framework_process(argv: list[str], state_dir: Path, log: Path, heartbeat: float, extra_env: dict[str, str],
                      prefix: list[str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A framework's own process (`celery worker`, `rq worker`, gunicorn) in its own session, killed whole after.

    `prefix` runs it behind e.g. `unshare --pid --fork`."""
    env = app_env(state_dir, heartbeat)
    env[EVENTS_ENV] = str(events_path(state_dir))
    env.update(extra_env)
    with log.open("wb") as out:
        process = subprocess.Popen([*(prefix or []), sys.executable, "-m", *argv], env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        kill_session(process.pid)
        process.wait(timeout=30)


def kill_session(session: int) -> None:
    """SIGKILL every process of a session, also those in process groups of their own (RQ's work-horses)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # after the state: ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """The live children of `pid` (a killed child waiting to be reaped is not one)."""
    try:
        pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    live = []
    for child in pids:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            live.append(child)
    return live


def journal_pids(state_dir: Path) -> set[int]:
    return {writer.pid for writer in read_totals(state_dir).writers}


def declared_capacities(state_dir: Path) -> dict[int, int | None]:
    """pid -> the capacity each live app process declared in its journal (load weights' occupancy)."""
    from candor_tracer.journal.reader import read_writers

    return {writer.pid: writer.load.capacity if writer.load is not None else None
            for writer in read_writers(state_dir).writers}
