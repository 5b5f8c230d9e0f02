"""A small HTTP app that traces its jobs with candor_tracer in journal mode (set CANDOR_STATE_DIR).

    python -m harness.apps.traced_app --port 8080 --name s1 [--capacity 4]

GET /          -> "hello from <name>" (counts as progress: heartbeat())
GET /job?seconds=20 -> starts a traced background job (202)
GET /slow?seconds=2 -> answers after that long (a request that holds its connection)
GET /metrics   -> the app's own registry, with a naive counter incremented only when a job ends

A thread calls heartbeat() every 200 ms as the app's main loop would; SIGSTOP freezes it (a stall).
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY, Counter, generate_latest

from candor_tracer import declare_capacity, heartbeat, trace

JOB_SECONDS = Counter("job_worked_seconds_total", "Seconds spent working on jobs", ["task"])
NAIVE_SECONDS = Counter("naive_job_seconds_total", "Seconds of finished jobs, counted only when a job ends", ["task"])


def run_job(seconds: float, task: str) -> None:
    started = time.monotonic()
    with trace(JOB_SECONDS, task=task):
        time.sleep(seconds)
    NAIVE_SECONDS.labels(task=task).inc(time.monotonic() - started)


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), "text/plain; version=0.0.4")
            elif url.path == "/job":
                query = parse_qs(url.query)
                seconds = float(query.get("seconds", ["1"])[0])
                task = query.get("task", ["resize"])[0]
                threading.Thread(target=run_job, args=(seconds, task), daemon=True).start()
                self._send(202, b"started\n")
            elif url.path == "/slow":
                time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
                self._send(200, b"slow\n")
            else:
                heartbeat()
                self._send(200, f"hello from {name}\n".encode())

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="app")
    parser.add_argument("--capacity", type=int, default=None, help="declare this many workers (load weights)")
    args = parser.parse_args()
    if args.capacity is not None:
        declare_capacity(args.capacity)

    def beat() -> None:
        while True:
            heartbeat()
            time.sleep(0.2)

    NAIVE_SECONDS.labels(task="resize")  # exposed as 0 from the start, as a naive exporter would
    heartbeat()  # opens the journal at once, so the sidecar sees this process before any job
    threading.Thread(target=beat, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.name))
    server.serve_forever()


if __name__ == "__main__":
    main()
