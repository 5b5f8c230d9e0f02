"""The reload the controllers do, on a real HAProxy: the servers' runtime state survives it, and a client's
idle kept-alive connection is closed by the old worker."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.processes.haproxy_reload import ReloadableHAProxy
from harness.processes.ports import free_port

pytestmark = pytest.mark.integration


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"hi\n")

    def log_message(self, *args: object) -> None:
        pass


def _config(front: int, servers: str) -> str:
    """One frontend at `front` and backend `be` with `servers` (its server lines)."""
    return (f"global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n"
            f"    timeout server 10s\n    timeout http-keep-alive 10s\n"
            f"frontend fe\n    bind 127.0.0.1:{front}\n    default_backend be\nbackend be\n{servers}")


def test_a_reload_keeps_the_servers_state_and_closes_idle_client_connections() -> None:
    app = ThreadingHTTPServer(("127.0.0.2", 0), _Hello)  # not the slots' placeholder address
    threading.Thread(target=app.serve_forever, daemon=True).start()
    front = free_port()
    config = _config(front, "    server SRV_1 127.0.0.1:1 disabled\n    server SRV_2 127.0.0.1:1 disabled\n")
    try:
        with ReloadableHAProxy(config) as haproxy:
            # A slot filled through the runtime API, as a controller does between reloads.
            haproxy.command(f"set server be/SRV_2 addr 127.0.0.2 port {app.server_address[1]}")
            haproxy.command("set server be/SRV_2 state ready")
            client = http.client.HTTPConnection("127.0.0.1", front, timeout=5)
            client.request("GET", "/")
            assert client.getresponse().read() == b"hi\n"  # kept alive, now idle

            haproxy.reload()
            # The new worker has SRV_2's address (in the config written at the reload) and its state (from
            # the file): it still answers. SRV_1, still an empty slot, stays in maintenance.
            assert "SRV_1 127.0.0.1:1 disabled" in haproxy.config_text
            fresh = http.client.HTTPConnection("127.0.0.1", front, timeout=5)
            fresh.request("GET", "/")
            assert fresh.getresponse().status == 200
            fresh.close()
            # The old worker closed the idle connection: the client finds it closed (EOF), unanswered.
            sock = client.sock
            assert sock is not None
            sock.settimeout(5)
            assert sock.recv(1) == b""
            client.close()
            assert haproxy.reloads == 1
    finally:
        app.shutdown()
        app.server_close()


def test_the_state_file_lines_are_in_the_config() -> None:
    from harness.processes.haproxy_reload import with_server_state

    text = with_server_state("global\n    maxconn 1\ndefaults\n    mode http\n", "/tmp/s")
    assert "global\n    server-state-file /tmp/s\n" in text
    assert "defaults\n    load-server-state-from-file global\n" in text


def test_the_load_counts_a_kept_alive_connection_a_reload_closed_apart_and_retries_it() -> None:
    from harness.processes.drain_rig import Load
    from harness.processes.waiting import wait_until

    app = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    front = free_port()
    config = _config(front, f"    server SRV_1 127.0.0.1:{app.server_address[1]}\n")
    try:
        with ReloadableHAProxy(config) as haproxy, Load((front,), 40, kept_alive=1) as load:
            wait_until(lambda: len(load.answers) >= 20, 10, "kept-alive connections in the pool")
            for _ in range(3):  # each reload closes the pool's idle connections under the next requests
                haproxy.reload()
                answered = len(load.answers)
                wait_until(lambda n=answered: len(load.answers) >= n + 20, 10, "requests after the reload")
        closed = load.closed_idle()
        assert closed, "no request met a kept-alive connection the reload closed"
        assert all(answer.status == 200 for answer in closed)  # the retry on a new connection was answered
        assert load.failed() == []
    finally:
        app.shutdown()
        app.server_close()


def test_the_config_written_at_a_reload_has_each_servers_current_address_and_maintenance() -> None:
    from harness.processes.haproxy_reload import with_servers

    config = ("backend be\n    default-server check agent-check\n"
              "    server SRV_1 127.0.0.1:1 disabled\n    server SRV_2 127.0.0.1:1 disabled weight 100\n"
              "backend other\n    server SRV_1 127.0.0.1:1 disabled\n")
    header = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...\n"
    # SRV_1 filled and ready (admin 4: only the config's maintenance left), SRV_2 put back in MAINT at its
    # address (admin 5, haproxy-ingress's way); `other` is not in the state: left as it was.
    state = header + "".join(
        f"3 be {i} SRV_{i} {address} 2 {admin} 100 100 4 1 0 4 8 0 0 0 - {port} - 0 0 - - 0\n"
        for i, address, admin, port in ((1, "10.244.77.5", 4, 8080), (2, "10.244.77.6", 5, 8080)))
    written = with_servers(config, state)
    assert "    server SRV_1 10.244.77.5:8080\n" in written
    assert "    server SRV_2 10.244.77.6:8080 weight 100 disabled\n" in written
    assert written.endswith("backend other\n    server SRV_1 127.0.0.1:1 disabled\n")
