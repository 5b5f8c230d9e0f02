"""A small asyncio HTTP/1.1 server: GET/HEAD, keep-alive, hard time limits on every connection.

Hand-written rather than aiohttp to keep the sidecar near its 40 MB RSS budget; it only needs to serve
a handful of small documents to HAProxy, Prometheus and humans, and to survive garbage, slow and idle
clients without ever blocking /health.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

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


Handler = Callable[[Request], Awaitable[Response]]


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


class HttpServer:
    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int, backlog: int = 4096) -> asyncio.Server:
        self.server = await asyncio.start_server(self._serve, host, port, backlog=backlog, reuse_address=True,
                                                 limit=self.limits.max_header_bytes)
        return self.server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > self.limits.max_connections:
                return
            await self._requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("HTTP connection failed")
        finally:
            self.connections -= 1
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # unsent data to a client that stopped reading: do not linger
            else:
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.limits
        for count in range(limits.max_requests):
            timeout = limits.header_timeout if count == 0 else limits.idle_timeout + limits.header_timeout
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.LimitOverrunError:
                await self._send_error(writer, 431, "request head too large")
                return
            try:
                request = _parse_head(head[:-4])
                await self._read_body(reader, request)
            except _BadRequest as error:
                await self._send_error(writer, error.status, str(error))
                return
            keep_alive = _keep_alive(request) and count + 1 < limits.max_requests
            if request.method not in ("GET", "HEAD"):
                response = Response(405, b"only GET and HEAD\n", headers=[("Allow", "GET, HEAD")])
            else:
                response = await self.handler(request)
            writer.write(_encode(response, request.method == "HEAD", keep_alive))
            await asyncio.wait_for(writer.drain(), limits.write_timeout)
            if response.after_sent is not None:
                response.after_sent()
            if not keep_alive:
                return

    async def _read_body(self, reader: asyncio.StreamReader, request: Request) -> None:
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            raise _BadRequest(501, "chunked request bodies are not supported")
        length_text = request.headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        length = int(length_text)
        if length > self.limits.max_body_bytes:
            raise _BadRequest(413, "request body too large")
        if length:
            await asyncio.wait_for(reader.readexactly(length), self.limits.header_timeout)

    async def _send_error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        writer.write(_encode(Response(status, (message + "\n").encode()), False, False))
        await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
