"""A small HTTP/1.1 server: GET/HEAD (and OPTIONS on probe paths), keep-alive, hard time limits on every connection.

Hand-written rather than aiohttp to keep the sidecar near its 40 MB RSS budget; it only needs to serve
a handful of small documents to HAProxy, Prometheus and humans, and to survive garbage, slow and idle
clients without ever blocking /health. A thread accepts and answers complete, cheap requests at once;
the asyncio event loop takes everything else (partial, slow, kept-alive, /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from candor_sidecar.listener import accept_connections, listen_tcp

log = logging.getLogger("candor.sidecar.http")

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    version: str

    def flag(self, name: str) -> bool:
        """`?verbose`, `?verbose=1`, `?verbose=true` all count; `?verbose=0|false` does not."""
        values = self.query.get(name)
        return values is not None and values[-1].lower() not in ("0", "false", "no")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    after_sent: Callable[[], None] | None = None  # called once the body has been handed to the kernel


Handler = Callable[[Request], "Response | Awaitable[Response]"]  # sync answers skip creating a task


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 5.0  # a request head must arrive within this (slowloris ends here)
    idle_timeout: float = 10.0  # a kept-alive connection may wait this long for its next request
    write_timeout: float = 5.0  # a client that does not read its response is cut off
    max_header_bytes: int = 16384
    max_body_bytes: int = 65536
    max_requests: int = 1000  # per connection
    max_connections: int = 20000


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        raise _BadRequest(400, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(505, "only HTTP/1.0 and HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    split = urlsplit(target)
    return Request(method, unquote(split.path) or "/", parse_qs(split.query, keep_blank_values=True), headers,
                   version)


def _keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _encode(response: Response, head_only: bool, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
             f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
             "Cache-Control: no-store", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class _Connection(asyncio.Protocol):
    """One client connection: a buffer, one deadline timer, at most one request in progress.

    A protocol rather than streams: an idle or slow client costs one small object and one timer, so
    thousands of them neither eat memory nor delay the event loop that answers /health.
    """

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.requests = 0
        self.busy = False  # a handler is running or a response is being written
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.eof = False

    # deadlines ---------------------------------------------------------------------------------------
    def _deadline(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()  # too slow, idle too long, or not reading its response

    # asyncio callbacks -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        if self.server.connections > self.limits.max_connections:
            transport.abort()
            return
        self._deadline(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections -= 1
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        if not self.busy:
            self._next_request()
        elif len(self.buffer) > self.limits.max_header_bytes + self.limits.max_body_bytes:
            self._fail(431, "too much pipelined data")

    def eof_received(self) -> bool:
        # Half-closed by the client: finish a response in progress, otherwise there is nothing to answer.
        self.eof = True
        return self.busy

    def pause_writing(self) -> None:
        self._deadline(self.limits.write_timeout)  # the client stopped reading

    def resume_writing(self) -> None:
        if self.busy and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # requests ----------------------------------------------------------------------------------------
    def _fail(self, status: int, message: str) -> None:
        self._send(Response(status, (message + "\n").encode()), head_only=False, keep_alive=False)

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > self.limits.max_header_bytes:
                self._fail(431, "request head too large")
            return
        if end > self.limits.max_header_bytes:
            self._fail(431, "request head too large")
            return
        try:
            request = _parse_head(bytes(self.buffer[:end]))
            length = _content_length(request, self.limits.max_body_bytes)
        except _BadRequest as error:
            self._fail(error.status, str(error))
            return
        if len(self.buffer) < end + 4 + length:
            return  # the body is still coming, within the same deadline
        del self.buffer[: end + 4 + length]
        self.requests += 1
        self.busy = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        keep_alive = _keep_alive(request) and self.requests < self.limits.max_requests
        if not self.server.allows(request):
            self._send(Response(405, b"only GET and HEAD\n", headers=[("Allow", "GET, HEAD")]), False, keep_alive)
            return
        try:
            answer = self.server.handler(request)
        except Exception:
            log.exception("handler failed for %s", request.path)
            self._fail(500, "internal error")
            return
        if isinstance(answer, Response):
            self._send(answer, request.method == "HEAD", keep_alive)
        else:
            self._deadline(self.limits.write_timeout + 30.0)  # a slow handler still ends
            self.task = self.loop.create_task(self._await(answer, request.method == "HEAD", keep_alive))

    async def _await(self, answer: Awaitable[Response], head_only: bool, keep_alive: bool) -> None:
        try:
            response = await answer
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed")
            response, keep_alive = Response(500, b"internal error\n"), False
        self.task = None
        if self.transport is not None:
            self._send(response, head_only, keep_alive)

    def _send(self, response: Response, head_only: bool, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self.eof
        transport.write(_encode(response, head_only, keep_alive))
        if response.after_sent is not None:
            self._after_flush(response.after_sent)
        if not keep_alive:
            self.closing = True
            self.busy = True
            transport.close()  # flushes what is buffered first
            if transport.get_write_buffer_size():
                self._deadline(self.limits.write_timeout)
            return
        self.busy = False
        self._deadline(self.limits.idle_timeout + self.limits.header_timeout)
        if self.buffer:
            self._next_request()  # pipelined

    def _after_flush(self, callback: Callable[[], None], waited: float = 0.0) -> None:
        """Once the response left our buffer (it is in the kernel, on its way): then it counts as served."""
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size() == 0:
            callback()
        elif waited < self.limits.write_timeout:
            self.loop.call_later(0.02, self._after_flush, callback, waited + 0.02)


def _content_length(request: Request, maximum: int) -> int:
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        raise _BadRequest(501, "chunked request bodies are not supported")
    text = request.headers.get("content-length", "0")
    if not text.isdigit():
        raise _BadRequest(400, "bad Content-Length")
    if int(text) > maximum:
        raise _BadRequest(413, "request body too large")
    return int(text)


class HttpServer:
    """Listens on one port. A thread accepts; a request that is already complete on arrival (HAProxy's
    checks, curl, most probes) for a `fast` path is answered right there with four syscalls and closed.
    Everything else (slow or partial clients, keep-alive, /metrics) is handed to the event loop.
    """

    def __init__(self, handler: Handler, limits: Limits | None = None,
                 fast: Callable[[str], bool] = lambda path: False,
                 options_as_get: Callable[[str], bool] = lambda path: False) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.fast = fast  # paths whose handler answers synchronously and cheaply (never /metrics)
        # Probe paths answering OPTIONS exactly as GET: HAProxy's `option httpchk <uri>` (no method) sends
        # OPTIONS, and so does haproxy-ingress's health-check-uri annotation; a 405 would mark every pod DOWN.
        self.options_as_get = options_as_get
        self.connections = 0
        self.fast_answers = 0
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def allows(self, request: Request) -> bool:
        return request.method in ("GET", "HEAD") or (request.method == "OPTIONS"
                                                     and self.options_as_get(request.path))

    async def start(self, host: str, port: int, backlog: int = 4096) -> int:
        """Binds and starts accepting; the port (useful with port 0)."""
        self.loop = asyncio.get_running_loop()
        # Deferred accept wakes accept() only once the request has arrived (or after a second): HAProxy and
        # curl send at once, but without it about half of them were accepted a moment before their request
        # landed and took the slow event-loop path instead of being answered by the accept thread.
        sock = self.sock = listen_tcp(host, port, backlog, defer_accept=True)
        threading.Thread(target=self._accept_loop, name="candor-http-accept", daemon=True).start()
        bound: int = sock.getsockname()[1]
        return bound

    def _accept_loop(self) -> None:
        assert self.sock is not None and self.loop is not None
        for conn in accept_connections(self.sock, lambda: self.closed, "HTTP"):
            try:
                if self._answer_at_once(conn):
                    continue
            except OSError:
                conn.close()
                continue
            try:
                self.loop.call_soon_threadsafe(self._adopt, conn)
            except RuntimeError:  # the loop is closed: we are shutting down
                conn.close()
                return

    def _answer_at_once(self, conn: socket.socket) -> bool:
        """True when the request was complete on arrival and has been answered (and the socket closed)."""
        try:
            data = conn.recv(self.limits.max_header_bytes, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        try:
            request = _parse_head(data[:end])
        except _BadRequest:
            return False  # the event loop path explains the problem to the client
        if not self.allows(request) or request.headers.get("content-length", "0") != "0" \
                or "transfer-encoding" in request.headers or not self.fast(request.path):
            return False
        response = self.handler(request)
        if not isinstance(response, Response):  # a handler that must await after all: never here
            close = getattr(response, "close", None)
            if close is not None:
                close()
            return False
        conn.recv(end + 4, socket.MSG_DONTWAIT)  # consume the head, so closing sends a FIN, not a reset
        conn.settimeout(self.limits.write_timeout)
        conn.sendall(_encode(response, request.method == "HEAD", keep_alive=False))
        conn.close()
        self.fast_answers += 1
        if response.after_sent is not None:
            self.loop.call_soon_threadsafe(response.after_sent)  # type: ignore[union-attr]
        return True

    def _adopt(self, conn: socket.socket) -> None:
        assert self.loop is not None
        if self.closed:
            conn.close()
            return
        conn.setblocking(False)
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: _Connection(self), conn))
        task.add_done_callback(_log_adopt_failure)

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self.sock.close()


def _log_adopt_failure(task: asyncio.Task[tuple[asyncio.Transport, asyncio.Protocol]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("could not adopt a connection: %s", task.exception())
