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
    error: str = ""  # why it failed, when it did: the exception, or the status line
    retried: bool = False  # a kept-alive connection was closed without an answer, and a new one was used


# How a kept-alive connection closed before any answer shows in http.client: no status line, or a reset.
STALE_KEEP_ALIVE = ("RemoteDisconnected", "ConnectionResetError", "BrokenPipeError")


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
            reused = connection is not None
            connection, status, server, error = self._get(connection)
            retried = False
            if reused and status == 0 and error.startswith(STALE_KEEP_ALIVE):
                # HTTP/1.1 lets a server close an idle kept-alive connection at any time, and HAProxy
                # does exactly that to a client when the server connection it reused for the request
                # was closed under it: no answer, no log line, so that the client retries. Browsers and
                # HTTP libraries retry such an idempotent GET once on a new connection; so does this one.
                retried = True
                connection, status, server, error = self._get(None)
            ended = time.monotonic()
            with self._lock:
                self.results.append(RequestResult(ended, status, server, ended - started, error, retried))
        if connection is not None:
            connection.close()

    def _get(self, connection: http.client.HTTPConnection | None
             ) -> tuple[http.client.HTTPConnection | None, int, str, str]:
        """One GET: the connection to keep (None when it closed), the status, the server and why it failed."""
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10.0)
            connection.request("GET", self.path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace").strip()
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = None
            if response.status != 200:
                return connection, response.status, "", f"HTTP {response.status} {response.reason}"
            return connection, 200, body, ""
        except (OSError, http.client.HTTPException) as exc:
            if connection is not None:
                connection.close()
            return None, 0, "", f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> list[RequestResult]:
        with self._lock:
            return list(self.results)
