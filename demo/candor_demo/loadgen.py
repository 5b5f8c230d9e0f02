"""A steady request stream through HAProxy; each answer names the instance that served it."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestResult:
    at: float  # monotonic time the answer came back
    status: int  # HTTP status, 0 when the connection failed
    server: str  # the instance that answered ("" on errors)
    seconds: float


class LoadGenerator:
    """`rate` requests per second spread over a few client threads, each with its own connection."""

    def __init__(self, port: int, rate: float, clients: int = 8, path: str = "/resize") -> None:
        self.port, self.rate, self.clients, self.path = port, rate, clients, path
        self.results: list[RequestResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), name=f"load-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5.0)

    def _run(self, index: int) -> None:
        period = self.clients / self.rate
        next_at = time.monotonic() + period * index / self.clients
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if (delay := next_at - time.monotonic()) > 0 and self._stop.wait(delay):
                break
            next_at = max(next_at + period, time.monotonic() - period)
            started = time.monotonic()
            status, server = 0, ""
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10.0)
                connection.request("GET", self.path)
                response = connection.getresponse()
                body = response.read().decode(errors="replace").strip()
                status = response.status
                server = body if status == 200 else ""
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                connection = None
            ended = time.monotonic()
            with self._lock:
                self.results.append(RequestResult(ended, status, server, ended - started))
        if connection is not None:
            connection.close()

    def snapshot(self) -> list[RequestResult]:
        with self._lock:
            return list(self.results)
