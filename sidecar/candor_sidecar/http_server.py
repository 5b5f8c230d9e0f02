"""A small HTTP/1.1 server on the event loop: GET/HEAD (and OPTIONS on probe paths), keep-alive, pipelining.

h11 parses and frames (it is small, pure Python and keeps to the RFCs); this module adds what a server
facing HAProxy, Prometheus, humans and hostile clients needs: a deadline on every connection (slowloris
and idle clients end), caps on the request head and body, a 400 for garbage, pipelined requests answered
in order (in a loop: any number of them in one write costs no stack), a connection budget of its own
whose idle connections make room for new ones, and memory per connection bounded (what is buffered
from and for one client is capped). Every request is handled on the event loop, so handlers never race
each other. A handler that waits can ask whether its client is still there (`Request.client`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from candor_sidecar.descriptors import BudgetedConnection, ConnectionBudget

log = logging.getLogger("candor.sidecar.http")

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


class Client(Protocol):
    """The connection a request came on, as a handler sees it."""

    @property
    def address(self) -> str:
        """The source address ("" if unknown)."""

    def departed(self) -> asyncio.Future[None]:
        """Done once the client has gone: it closed its side (EOF, a half-close) or the connection ended."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    version: str
    client: Client | None = None

    @property
    def peer(self) -> str:
        """The client's IP address ("" if unknown)."""
        return self.client.address if self.client is not None else ""

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
    header_timeout: float = 5.0  # a request (head and body) must arrive within this: slowloris ends here
    idle_timeout: float = 10.0  # a kept-alive connection may wait this long for its next request
    write_timeout: float = 5.0  # a client that does not read its response is cut off
    # What one connection may make us hold: a head, a body (read and dropped: only GET and HEAD are
    # answered), pipelined requests waiting behind a busy one (at most head + body bytes), answers the
    # client does not read (writing pauses above write_buffer_bytes; no further pipelined request is
    # answered until it drains). So an HTTP connection costs at most about 60 KiB whatever it sends.
    max_header_bytes: int = 16384
    max_body_bytes: int = 16384
    write_buffer_bytes: int = 16384
    max_requests: int = 1000  # per connection
    max_connections: int = 512  # when no budget is given
    handler_timeout: float = 35.0  # a handler that waits for something (e.g. /drain/wait) still ends


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _request(event: h11.Request, client: Client) -> Request:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
    split = urlsplit(event.target.decode("latin-1"))
    return Request(event.method.decode("latin-1"), unquote(split.path) or "/",
                   parse_qs(split.query, keep_blank_values=True), headers, "HTTP/" + event.http_version.decode(),
                   client)


class _Connection(BudgetedConnection):
    """One client connection: an h11 state machine, one deadline timer, at most one request in progress.

    A protocol rather than streams: an idle or slow client costs one small object and one timer, so
    thousands of them neither eat memory nor delay the event loop that answers /health and the agent.
    """

    __slots__ = ("_departed", "address", "advancing", "body_bytes", "busy", "h11", "left", "limits", "loop", "paused",
                 "request", "requests", "task", "timer")
    server: HttpServer
    transport: asyncio.Transport | None

    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes)
        self.request: Request | None = None  # the request whose head and body are arriving
        self.body_bytes = 0
        self.requests = 0
        self.busy = False  # a handler is running or its response is being written
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.address = ""
        self.left = False  # the client closed its side, or the connection ended
        self._departed: asyncio.Future[None] | None = None  # made only for a handler that asks
        self.advancing = False  # _advance is on the stack: a nested call leaves the work to its loop
        self.paused = False  # the client does not read: answer nothing more until it does

    # the client, as a handler sees it ------------------------------------------------------------------
    def departed(self) -> asyncio.Future[None]:
        if self._departed is None:
            self._departed = self.loop.create_future()
            if self.left:
                self._departed.set_result(None)
        return self._departed

    def _leave(self) -> None:
        self.left = True
        if self._departed is not None and not self._departed.done():
            self._departed.set_result(None)

    # the budget (admitting, releasing and evicting: BudgetedConnection) ----------------------------------
    def _evictable(self, yes: bool) -> None:
        if self.admitted:
            self.server.budget.evictable(self, yes)

    # deadlines ---------------------------------------------------------------------------------------
    def _deadline(self, seconds: float | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if seconds is None else self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()  # too slow, idle too long, or not reading its response

    # asyncio callbacks -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.budget.admit():
            transport.abort()  # dropped at once: descriptors for the journals come first
            return
        self.admitted = True
        self.server.connections += 1
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else ""
        transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        self._evictable(True)
        self._deadline(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._deadline(None)
        self._leave()
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        # h11 buffers whatever is beyond the current request (pipelining) until start_next_cycle
        if len(self.h11.trailing_data[0]) + len(data) > self.limits.max_header_bytes + self.limits.max_body_bytes:
            if self.busy:  # an answer is on its way: no room for a second one, just stop reading
                self._close()
            else:
                self._refuse(_Refused(431, "too much pipelined data"))
            return
        self.h11.receive_data(data)
        self._advance()

    def eof_received(self) -> bool:
        # Half-closed by the client: pipelined requests already received are still answered, but a handler
        # that waits on the client's behalf (Request.client.departed) learns it has gone.
        self._leave()
        self.h11.receive_data(b"")
        self._advance()
        return True  # we close the transport ourselves once the last answer is written

    def pause_writing(self) -> None:
        self.paused = True
        self._evictable(True)  # a client that does not read its answers is the first to make room
        self._deadline(self.limits.write_timeout)  # the client stopped reading

    def resume_writing(self) -> None:
        self.paused = False
        self._evictable(not self.busy)
        if self.busy:
            self._deadline(None)
        else:
            self._deadline(self.limits.idle_timeout + self.limits.header_timeout)
            self._advance()

    # requests ----------------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Consume events until a request is complete (then handle it) or more bytes are needed.

        A loop, never a recursion: an answer written at once lets the loop go on to the next pipelined
        request, and a call made while the loop runs (from a handler's answer) leaves the work to it.
        """
        if self.advancing:
            return
        self.advancing = True
        try:
            while self.transport is not None and not self.busy and not self.paused:
                try:
                    event = self.h11.next_event()
                    if isinstance(event, h11.Request):
                        self._begin(event)
                    elif isinstance(event, h11.Data):
                        self.body_bytes += len(event.data)
                        if self.body_bytes > self.limits.max_body_bytes:
                            raise _Refused(413, "request body too large")
                    elif isinstance(event, h11.EndOfMessage):
                        self._handle()
                    elif isinstance(event, h11.ConnectionClosed):
                        self._close()
                    elif event is h11.NEED_DATA or event is h11.PAUSED:
                        return
                except h11.RemoteProtocolError as error:
                    self._refuse(_Refused(error.error_status_hint, f"bad request: {error}"))
                    return
                except _Refused as refused:
                    self._refuse(refused)
                    return
        finally:
            self.advancing = False

    def _begin(self, event: h11.Request) -> None:
        if event.http_version not in (b"1.0", b"1.1"):
            raise _Refused(505, "only HTTP/1.0 and HTTP/1.1")
        request = _request(event, self)
        length = request.headers.get("content-length")
        if length is not None and int(length) > self.limits.max_body_bytes:  # h11 checked it is digits
            raise _Refused(413, "request body too large")
        self.request, self.body_bytes = request, 0

    def _handle(self) -> None:
        request, self.request = self.request, None
        assert request is not None
        self.requests += 1
        self.busy = True
        self._evictable(False)
        self._deadline(None)
        keep_alive = self.requests < self.limits.max_requests
        if not self.server.allows(request):
            self._send(Response(405, b"only GET and HEAD\n", headers=[("Allow", "GET, HEAD")]), False, keep_alive)
            return
        try:
            answer = self.server.handler(request)
        except Exception:
            log.exception("handler failed for %s", request.path)
            self._send(Response(500, b"internal error\n"), False, False)
            return
        if isinstance(answer, Response):
            self._send(answer, request.method == "HEAD", keep_alive)
        else:
            self._deadline(self.limits.handler_timeout)
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
            self._advance()  # a pipelined request may already be buffered

    def _refuse(self, refused: _Refused) -> None:
        """Answer a request we cannot parse or accept (if HTTP still allows an answer), then close."""
        self.busy = True
        self._evictable(False)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(Response(refused.status, (str(refused) + "\n").encode()), False, False)
        else:
            self._close()

    def _send(self, response: Response, head_only: bool, keep_alive: bool) -> None:
        """Write one answer; then the connection is ready for the next request (the caller's loop reads it)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), *response.headers]
        if not keep_alive:
            headers.append(("Connection", "close"))
        try:
            head = self.h11.send(h11.Response(status_code=response.status, headers=headers,
                                            reason=REASONS.get(response.status, "").encode()))
            body = b"" if head_only else self.h11.send(h11.Data(data=response.body))
            end = self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:  # e.g. the request was refused before it was complete
            transport.write(_raw_answer(response))
            self._close()
            return
        if len(body) > self.limits.write_buffer_bytes:
            # A large body (a /metrics scrape, shared by the scrapes that came together) is handed to the
            # kernel as it is: copied only as far as the kernel cannot take it at once.
            transport.write(head)
            transport.write(body)
            if end:
                transport.write(end)
        else:
            transport.write(head + body + end)
        if response.after_sent is not None:
            self._after_flush(response.after_sent)
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
            self._close()
            return
        self.h11.start_next_cycle()
        self.busy = False
        self._evictable(True)
        if not self.paused:
            self._deadline(self.limits.idle_timeout + self.limits.header_timeout)

    def _close(self) -> None:
        self.busy = True
        transport = self.transport
        if transport is None:
            return
        self._evictable(True)  # its answer is written: nothing is lost if it must make room
        transport.close()  # flushes what is buffered first
        if transport.get_write_buffer_size():
            self._deadline(self.limits.write_timeout)

    def _after_flush(self, callback: Callable[[], None], waited: float = 0.0) -> None:
        """Once the response left our buffer (it is in the kernel, on its way): then it counts as served."""
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size() == 0:
            callback()
        elif waited < self.limits.write_timeout:
            self.loop.call_later(0.02, self._after_flush, callback, waited + 0.02)


def _raw_answer(response: Response) -> bytes:
    """An answer written past h11, for a client whose request h11 no longer allows answering."""
    head = (f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + response.body


class HttpServer:
    """Listens on one port; every connection is a _Connection on the running event loop."""

    def __init__(self, handler: Handler, limits: Limits | None = None,
                 options_as_get: Callable[[str], bool] = lambda path: False,
                 budget: ConnectionBudget | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.budget = budget or ConnectionBudget(self.limits.max_connections)  # this port's own
        # Probe paths answering OPTIONS exactly as GET: HAProxy's `option httpchk <uri>` (no method) sends
        # OPTIONS, and so does haproxy-ingress's health-check-uri annotation; a 405 would mark every pod DOWN.
        self.options_as_get = options_as_get
        self.connections = 0
        self.server: asyncio.Server | None = None

    def allows(self, request: Request) -> bool:
        return request.method in ("GET", "HEAD") or (request.method == "OPTIONS"
                                                     and self.options_as_get(request.path))

    async def start(self, host: str, port: int) -> int:
        """Binds and starts accepting; the port (useful with port 0)."""
        self.server = await self.budget.listen(lambda: _Connection(self), host, port)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
