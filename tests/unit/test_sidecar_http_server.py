"""The sidecar's HTTP/1.1 server over real loopback sockets: keep-alive, pipelining, limits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from candor_sidecar.config import parse_config
from candor_sidecar.http_server import HttpServer, Limits, Request, Response
from candor_sidecar.service import Sidecar


async def _slow(request: Request) -> Response:
    await asyncio.sleep(0.05)
    return Response(200, b"slow " + request.path.encode())


def _handler(request: Request) -> Response | asyncio.Future[Response] | object:
    if request.path == "/slow":
        return _slow(request)
    verbose = b" verbose" if request.flag("verbose") else b""
    return Response(200, request.path.encode() + verbose)


async def _server(limits: Limits | None = None) -> tuple[HttpServer, int]:
    server = HttpServer(_handler, limits)  # type: ignore[arg-type]
    return server, await server.start("127.0.0.1", 0)


async def _exchange(port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            data += chunk
    except TimeoutError:
        pass
    writer.close()
    return data


async def test_keep_alive_pipelining_head_and_methods() -> None:
    server, port = await _server()
    try:
        answer = await _exchange(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"HEAD /b?verbose HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                       b"Connection: close\r\n\r\nabc",
                                 timeout=2.0)
        parts = answer.split(b"HTTP/1.1 ")[1:]
        assert [part.split(b"\r\n")[0] for part in parts] == [b"200 OK", b"200 OK", b"200 OK",
                                                              b"405 Method Not Allowed"]
        assert parts[0].endswith(b"\r\n\r\n/a") and parts[1].endswith(b"slow /slow")
        assert b"Content-Length: 10" in parts[2] and parts[2].endswith(b"\r\n\r\n")  # HEAD: no body
        assert b"Connection: close" in parts[3]
        one = await _exchange(port, b"GET /x HTTP/1.0\r\n\r\n")
        assert one.endswith(b"/x") and b"Connection: close" in one
    finally:
        server.close()


async def test_every_connection_has_a_deadline() -> None:
    server, port = await _server(Limits(header_timeout=0.3, idle_timeout=0.3))
    try:
        started = time.monotonic()
        assert await _exchange(port, b"GET / HTTP/1.1\r\n") == b""  # never finishes its head
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        kept = await _exchange(port, b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive, then idle
        assert kept.endswith(b"/k") and time.monotonic() - started < 1.5
        assert server.connections == 0
    finally:
        server.close()


async def test_oversized_and_malformed_heads_are_refused() -> None:
    server, port = await _server(Limits(max_header_bytes=1024))
    try:
        assert (await _exchange(port, b"X" * 5000)).startswith(b"HTTP/1.1 431")
        assert (await _exchange(port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await _exchange(port, b"GET / HTTP/2.0\r\n\r\n")).startswith(b"HTTP/1.1 505")
        assert (await _exchange(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")  # no Host
    finally:
        server.close()


async def test_bodies_are_capped_and_chunked_ones_are_read() -> None:
    server, port = await _server(Limits(max_body_bytes=100))
    try:
        big = await _exchange(port, b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 413") and b"Connection: close" in big  # refused before it arrives
        chunks = b"GET /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert (await _exchange(port, chunks + b"5\r\nhello\r\n0\r\n\r\n")).endswith(b"\r\n\r\n/c")
        assert (await _exchange(port, chunks + b"65\r\n" + b"x" * 101)).startswith(b"HTTP/1.1 413")
    finally:
        server.close()


async def test_pipelined_requests_are_all_answered_even_after_the_client_half_closes() -> None:
    server, port = await _server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(f"GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in range(50)))
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 3.0)
        writer.close()
        bodies = [part.partition(b"\r\n\r\n")[2] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
        assert bodies == [f"/{n}".encode() for n in range(50)]
    finally:
        server.close()


async def _split_exchange(port: int, payload: bytes) -> bytes:
    """Sends the head in two pieces, as a slow client would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload[:5])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(payload[5:])
    data = await asyncio.wait_for(reader.read(), 3.0)
    writer.close()
    return data


def _status_and_body(answer: bytes) -> tuple[bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


async def test_options_on_probe_paths_answers_exactly_as_get(tmp_path: Path) -> None:
    """HAProxy's `option httpchk /health` (no method) sends `OPTIONS /health HTTP/1.0`: it must not get 405."""
    config = parse_config({**config_document(tmp_path), "disk": {"paths": [str(tmp_path)], "maxPercent": 100}})
    sidecar = Sidecar(config)
    sidecar._apply(sidecar._evaluate_now())
    port = await sidecar.http.start("127.0.0.1", 0)
    try:
        for path in ("/health", "/health/disk", "/health/disk:utilization", "/livez", "/readyz", "/health/"):
            for exchange in (_exchange, _split_exchange):  # whole or in pieces
                got = await exchange(port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
                options = await exchange(port, f"OPTIONS {path} HTTP/1.0\r\n\r\n".encode())
                assert _status_and_body(options) == _status_and_body(got), (path, exchange.__name__)
                assert _status_and_body(got)[0].startswith(b"HTTP/1.1 ") and len(_status_and_body(got)[1]) > 0
        # HAProxy may add headers and an empty body; answered the same.
        haproxy_like = await _exchange(port, b"OPTIONS /health HTTP/1.0\r\nContent-Length: 0\r\n"
                                             b"Host: 127.0.0.1\r\n\r\n")
        assert _status_and_body(haproxy_like)[0] == b"HTTP/1.1 200 OK"
        assert json.loads(_status_and_body(haproxy_like)[1])["status"] in ("pass", "warn")
        # A failing check answers 503 to OPTIONS as to GET.
        sick = Sidecar(parse_config({**config_document(tmp_path), "disk": {"paths": [str(tmp_path)],
                                                                           "maxPercent": 0.001}}))
        sidecar._apply(sick._evaluate_now())
        for path in ("/health", "/readyz"):
            options = await _exchange(port, f"OPTIONS {path} HTTP/1.0\r\n\r\n".encode())
            assert _status_and_body(options)[0] == b"HTTP/1.1 503 Service Unavailable"
        # Elsewhere OPTIONS stays refused.
        for exchange in (_exchange, _split_exchange):
            refused = await exchange(port, b"OPTIONS /metrics HTTP/1.0\r\n\r\n")
            assert refused.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in refused
    finally:
        sidecar.http.close()
        sidecar._executor.shutdown(wait=False)


def config_document(tmp_path: Path) -> dict[str, object]:
    return {"stateDir": str(tmp_path / "state"), "podInfoDir": str(tmp_path / "podinfo")}
