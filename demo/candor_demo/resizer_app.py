"""The demo's "resizer" app instance (`python -m candor_demo.resizer_app`): a real process with ten workers.

- background workers take jobs of half-normal length, traced with candor_tracer in journal mode
  (CANDOR_STATE_DIR), counted by a naive end-of-job counter (served on `--metrics-port` for Prometheus) and
  written to the truth file;
- workers are threads, or with `--worker-model process` child processes (one can be SIGKILLed mid-job);
- an HTTP port serves the load generator's requests (`GET /resize`), long ones (`GET /slow?seconds=N`
  answers after N seconds, `GET /stream?seconds=N` streams a line every half second for N seconds;
  `GET /inflight` counts them) and the fault script (`GET /workers`, `POST /memory/fill?percent=N`,
  `POST /memory/free`, `GET /memory`);
- SIGTERM stops the workers at once (interrupted jobs end at the stop), closes the listening socket, lets
  the requests in flight finish (at most `--finish-seconds`) as web servers do, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry, Counter, start_http_server

from candor_demo.ballast import Ballast, rss_bytes
from candor_demo.container_memory import report_process_memory
from candor_demo.jobs import JOB_CLASS, run_worker
from candor_demo.truth import TruthWriter
from candor_tracer.cgroup import MemoryReader

REQUEST_SECONDS = 0.01
LONGEST_REQUEST = 120.0  # seconds a /slow or /stream may ask for
STREAM_EVERY = 0.5  # seconds between the lines of a /stream


class InFlight:
    """The requests being answered, by kind: SIGTERM waits for them (idle kept-alive connections are not
    requests: they close when the process exits)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._count: dict[str, int] = {}

    def enter(self, kind: str) -> None:
        with self._lock:
            self._count[kind] = self._count.get(kind, 0) + 1

    def leave(self, kind: str) -> None:
        with self._lock:
            self._count[kind] -= 1
            self._lock.notify_all()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind: n for kind, n in self._count.items() if n}

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not any(self._count.values()), timeout)


class WorkerBoard:
    """Who is doing what, for `GET /workers`; fed by thread workers directly or by process workers' stdout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, dict[str, Any]] = {}

    def started(self, slot: int, pid: int, started: float, length: float) -> None:
        with self._lock:
            self._jobs[slot] = {"slot": slot, "pid": pid, "started": started, "length": length, "alive": True}

    def ended(self, slot: int) -> None:
        with self._lock:
            if slot in self._jobs:
                self._jobs[slot]["started"] = None

    def gone(self, slot: int) -> None:
        with self._lock:
            if slot in self._jobs:
                self._jobs[slot].update(started=None, alive=False)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(job) for job in sorted(self._jobs.values(), key=lambda job: int(job["slot"]))]


class RequestServer(ThreadingHTTPServer):
    """The app's HTTP server, with a listen queue as deep as real servers keep (gunicorn 2048, nginx 511).

    socketserver's default of 5 drops the SYNs of a burst the moment the app is a little slow to accept
    (a busy node, a pod's first seconds), and the load balancer reads that as a dead server.
    """

    request_queue_size = 512
    daemon_threads = True


class ThreadWorkers:
    def __init__(self, count: int, max_job: float, truth: TruthWriter, board: WorkerBoard,
                 on_done: Callable[[int, float], None], seed: int) -> None:
        self.stop = threading.Event()
        pid = os.getpid()

        def started(slot: int, at: float, length: float) -> None:
            board.started(slot, pid, at, length)

        def done(slot: int, seconds: float) -> None:
            board.ended(slot)
            on_done(slot, seconds)

        self.threads = [
            threading.Thread(target=run_worker, name=f"worker-{slot}", daemon=True,
                             args=(slot, max_job, self.stop, truth, started, done, seed + slot))
            for slot in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def terminate(self) -> None:
        self.stop.set()

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class ProcessWorkers:
    """One child process per worker; the naive counter lives here, fed by the children's `done` lines."""

    def __init__(self, count: int, max_job: float, truth_file: str, board: WorkerBoard,
                 on_done: Callable[[int, float], None], seed: int) -> None:
        self.board, self.on_done = board, on_done
        self.children: dict[int, subprocess.Popen[str]] = {}
        self.readers: list[threading.Thread] = []
        self._args = (count, max_job, truth_file, seed)

    def start(self) -> None:
        count, max_job, truth_file, seed = self._args
        for slot in range(count):
            child = subprocess.Popen(
                [sys.executable, "-m", "candor_demo.resizer_worker", "--slot", str(slot), "--max-job", str(max_job),
                 "--truth-file", truth_file, "--seed", str(seed + slot)],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1)
            self.children[slot] = child
            assert child.stdout is not None
            reader = threading.Thread(target=self._read, args=(slot, child.pid, child.stdout), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, slot: int, pid: int, stream: IO[str]) -> None:
        for line in stream:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "start":
                self.board.started(slot, pid, float(parts[2]), float(parts[3]))
            elif len(parts) == 3 and parts[0] == "done":
                self.board.ended(slot)
                self.on_done(slot, float(parts[2]))
        # EOF: the child exited (or was killed): a killed job's seconds never reach the naive counter.
        self.board.gone(slot)

    def terminate(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        for reader in self.readers:
            reader.join(1.0)


def _seconds(query: str) -> float:
    """`?seconds=N` of a long request, within 0..LONGEST_REQUEST."""
    value = float(parse_qs(query).get("seconds", ["20"])[0])
    return min(max(value, 0.0), LONGEST_REQUEST)


def make_handler(name: str, board: WorkerBoard, ballast: Ballast, memory_limit: int,
                 requests: Counter, in_flight: InFlight) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, payload: object) -> None:
            self._reply(200, json.dumps(payload), "application/json")

        def _stream(self, seconds: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            end = time.monotonic() + seconds
            while True:
                line = f"{name} {max(0.0, end - time.monotonic()):.1f}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                if time.monotonic() >= end:
                    break
                time.sleep(min(STREAM_EVERY, max(0.0, end - time.monotonic())))
            self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            path = url.path
            kind = path.strip("/") if path in ("/resize", "/slow", "/stream") else "other"
            in_flight.enter(kind)
            try:
                self._get(path, url.query)
            finally:
                in_flight.leave(kind)

        def _get(self, path: str, query: str) -> None:
            if path == "/resize":
                time.sleep(REQUEST_SECONDS)  # a small, real request; the heavy lifting is in the background jobs
                requests.inc()
                self._reply(200, f"{name}\n")
            elif path == "/slow":
                time.sleep(_seconds(query))
                self._reply(200, f"{name}\n")
            elif path == "/stream":
                self._stream(_seconds(query))
            elif path == "/inflight":
                self._json(in_flight.counts())
            elif path == "/workers":
                self._json(board.snapshot())
            elif path == "/memory":
                self._json({"rss": rss_bytes(), "limit": memory_limit, "ballast": ballast.size})
            else:
                self._reply(404, "not found\n")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path == "/memory/fill":
                percent = float(parse_qs(url.query).get("percent", ["85"])[0])
                crossing = float(parse_qs(url.query).get("crossing", ["80"])[0])
                crossed_at = ballast.fill_to(int(memory_limit * percent / 100), int(memory_limit * crossing / 100))
                self._json({"rss": rss_bytes(), "limit": memory_limit, "crossed_at": crossed_at})
            elif url.path == "/memory/free":
                freed_at = ballast.free()
                self._json({"rss": rss_bytes(), "limit": memory_limit, "freed_at": freed_at})
            else:
                self._reply(404, "not found\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--max-job", type=float, default=30.0)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address of the HTTP port (0.0.0.0 in a pod, where the load balancer dials the pod IP)")
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--truth-file", required=True)
    parser.add_argument("--worker-model", choices=("thread", "process"), default="thread")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--finish-seconds", type=float, default=25.0,
                        help="after SIGTERM, how long the requests in flight may take to finish")
    parser.add_argument("--events-file", default=None,
                        help="append `sigterm <name> <monotonic>` here when SIGTERM arrives (for tests on a node)")
    args = parser.parse_args(argv)
    # The demo's env limit when it sets one, else the container's real cgroup limit (in a pod).
    memory_limit = report_process_memory() or MemoryReader().read().limit or 512 * 1024 * 1024

    from candor_tracer import heartbeat

    registry = CollectorRegistry()
    naive = Counter("job_worked_seconds", "Seconds of finished jobs, counted when each job ends (the naive way)",
                    ["job_class", "worker"], registry=registry)
    requests = Counter("resize_requests", "Requests served", registry=registry)
    board = WorkerBoard()
    # `{boot}` in the path: one truth file per start of the process (a restarted container is PID 1 again,
    # so its events could not be told from the killed one's in a shared file).
    truth_file = args.truth_file.replace("{boot}", f"{time.monotonic():.6f}")
    truth = TruthWriter(truth_file)

    def on_done(slot: int, seconds: float) -> None:
        naive.labels(job_class=JOB_CLASS, worker=str(slot)).inc(seconds)

    workers: ThreadWorkers | ProcessWorkers
    if args.worker_model == "process":
        workers = ProcessWorkers(args.workers, args.max_job, truth_file, board, on_done, args.seed * 100)
    else:
        workers = ThreadWorkers(args.workers, args.max_job, truth, board, on_done, args.seed * 100)

    stopping = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        if args.events_file and not stopping.is_set():
            with open(args.events_file, "a") as events:
                events.write(f"sigterm {args.name} {time.monotonic():.6f}\n")
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    metrics_server, _ = start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
    in_flight = InFlight()
    server = RequestServer((args.bind, args.http_port),
                           make_handler(args.name, board, Ballast(), memory_limit, requests, in_flight))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    workers.start()
    while not stopping.wait(0.25):
        heartbeat()  # the app is alive and its main loop turns
    # Interrupt the jobs at once. The naive counter's last increments (the interrupted jobs' seconds, counted
    # at their end) die with the process unless a scrape happens to land before it exits.
    workers.terminate()
    # No new connections (a load balancer still sending some gets a refusal it can retry elsewhere); the
    # requests already being answered finish, as gunicorn's or nginx's graceful stop lets them.
    server.shutdown()
    server.server_close()
    in_flight.wait_idle(args.finish_seconds)
    workers.wait(10.0)
    truth.close()
    del metrics_server
    return 0


if __name__ == "__main__":
    sys.exit(main())
