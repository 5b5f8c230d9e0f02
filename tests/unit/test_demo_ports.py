"""The demo's listening ports stay out of the range outgoing connections take their source ports from."""

from __future__ import annotations

import socket

from candor_demo.ports import listen_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        ephemeral_start = int(handle.read().split()[0])
    ports = [listen_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(1024 <= port < ephemeral_start for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))
