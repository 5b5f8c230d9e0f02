"""An HTTP app whose requests cost CPU, traced with candor_tracer, with a fixed pool of workers it declares.

    python -m harness.apps.cpu_app --port 8080 --name s1 --workers 4 --cost-ms 3 [--bind 0.0.0.0]

GET /work -> burns `cost-ms` of CPU time (thread time, so a throttled or starved process takes longer in wall
time) inside a trace, then answers the app's name. At most `workers` requests are worked on at once; the rest
wait for a worker, as in a gthread pool. The capacity is declared for the sidecar's occupancy figure.
It imports only candor_tracer and prometheus_client, so it also runs as a file in the candor-sidecar image
(bench/weights_node.py mounts it into pods from a ConfigMap).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import Counter

from candor_tracer import declare_capacity, default_tracer, trace

WORK_SECONDS = Counter("request_worked_seconds_total", "Seconds spent working on requests", ["route"])


def burn(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def make_handler(name: str, workers: threading.BoundedSemaphore, cost: float) -> type[BaseHTTPRequestHandler]:
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: HAProxy reuses its server connections

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, Nagle holds the body until HAProxy's
            # delayed ACK of the headers (40 ms) on a kept-alive connection.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            if self.path.startswith("/work"):
                with workers, trace(WORK_SECONDS, route="work"):
                    burn(cost)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod)")
    parser.add_argument("--name", default="app")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cost-ms", type=float, default=3.0)
    args = parser.parse_args()
    declare_capacity(args.workers)
    default_tracer.open_journal()  # at once: the sidecar sees the process before its first request
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(
        args.name, threading.BoundedSemaphore(args.workers), args.cost_ms / 1000))
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # type: ignore[method-assign,assignment]  # a client gone: nothing to say
    server.serve_forever()


if __name__ == "__main__":
    main()
