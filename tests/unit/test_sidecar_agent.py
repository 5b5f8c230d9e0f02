"""The agent-check line: words, reasons, the slow-start ramp, maintenance and drain."""

from __future__ import annotations

import asyncio
import time

import pytest

from candor_sidecar.agent import READY_WINDOW, AgentState
from candor_sidecar.agent_server import AgentPeers, AgentServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_new_sidecar_ramps_its_weight_linearly_over_slow_start() -> None:
    clock = Clock()
    state = AgentState(slow_start=30.0, max_conn=30, clock=clock)
    state.update(False, "", False)
    assert state.line() == b"up 1% maxconn:30\n"  # no `ready`: it would cancel an operator's MAINT
    clock.now += 15
    assert state.line() == b"up 50% maxconn:30\n"
    clock.now += 15
    assert state.line() == b"up 100% maxconn:30\n"


def test_a_sidecar_whose_predecessor_said_maint_or_drain_says_ready_for_a_while() -> None:
    clock = Clock()
    state = AgentState(slow_start=0.0, max_conn=None, clock=clock, lift_admin_state=True)
    state.update(False, "", False)
    assert state.line() == b"ready up 100%\n"
    clock.now += READY_WINDOW
    assert state.line() == b"up 100%\n"


def test_an_app_failing_right_after_maintenance_is_still_lifted_out_of_maint() -> None:
    clock = Clock()
    state = AgentState(slow_start=0.0, max_conn=None, clock=clock)
    state.update(False, "", True)
    clock.now += 5
    state.update(True, "disk /data 95% > 90%", False)
    assert state.line() == b"ready down # disk /data 95% > 90%\n"  # one admin and one operational word
    clock.now += READY_WINDOW
    assert state.line() == b"down # disk /data 95% > 90%\n"


def test_failing_answers_down_with_the_reason_then_ramps_again_after_recovery() -> None:
    clock = Clock()
    state = AgentState(slow_start=10.0, max_conn=None, clock=clock)
    clock.now += 100
    state.update(True, "memory 91% > 80%\nsecond line", False)
    assert state.line() == b"down # memory 91% > 80% second line\n"
    clock.now += 5
    state.update(False, "", False)
    assert state.line() == b"up 1%\n"
    clock.now += 2.5
    assert state.line() == b"up 25%\n"
    clock.now += 100
    assert state.line() == b"up 100%\n"


def test_maintenance_answers_maint_and_its_removal_answers_ready() -> None:
    clock = Clock()
    state = AgentState(slow_start=0.0, max_conn=None, clock=clock)
    clock.now += 100
    state.update(False, "", True)
    assert state.line().startswith(b"maint")
    clock.now += 1
    state.update(False, "", False)
    assert state.line() == b"ready up 100%\n"
    clock.now += READY_WINDOW + 1
    assert state.line() == b"up 100%\n"


def test_drain_wins_over_everything() -> None:
    state = AgentState(slow_start=0.0, max_conn=None)
    state.update(True, "disk", True)
    state.drain()
    assert state.line().startswith(b"drain")
    assert state.word() == "drain"


async def _started(state: AgentState) -> tuple[AgentServer, int]:
    server = AgentServer(state)
    return server, await server.start("127.0.0.1", 0)


async def _agent_line(port: int, send: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(send)
        return await asyncio.wait_for(reader.read(), 2.0)  # EOF comes right after the line
    finally:
        writer.close()


async def test_the_server_answers_at_once_without_waiting_for_agent_send() -> None:
    server, port = await _started(AgentState(slow_start=0.0, max_conn=5))
    try:
        assert await _agent_line(port) == b"up 100% maxconn:5\n"
        # HAProxy's agent-send, or garbage, before reading: still one line
        assert await _agent_line(port, b"\x00\xffhello agent\r\n" * 100) == b"up 100% maxconn:5\n"
    finally:
        server.close()


async def test_the_agent_answers_every_change_of_state_and_counts_its_answers() -> None:
    state = AgentState(slow_start=0.0, max_conn=None)
    server, port = await _started(state)
    try:
        assert await _agent_line(port) == b"up 100%\n"
        state.update(True, "memory 91% > 80% " + "x" * 100_000, False)  # a huge reason is cut, not fatal
        line = await _agent_line(port)
        assert line.startswith(b"down # memory 91% > 80% xxx") and len(line) < 2048
        state.drain()
        assert await _agent_line(port) == b"drain # pod terminating\n"
        assert server.answers == 3
        assert list(server.peers.last_poll()) == ["127.0.0.1"]
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):  # close() took the listener away
        await _agent_line(port)


async def test_a_peer_that_never_closes_is_cut_off_after_the_linger_time() -> None:
    server = AgentServer(AgentState(slow_start=0.0, max_conn=None), linger=0.2)
    port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2.0) == b"up 100%\n"  # the agent shut its side
        assert server.connections == 1  # we never close ours
        deadline = time.monotonic() + 2.0
        while server.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.connections == 0  # the agent ended it
        writer.close()
    finally:
        server.close()


def test_agent_peers_remember_the_latest_poll_per_address_within_a_bound() -> None:
    peers = AgentPeers(limit=2)
    peers.record("10.0.0.1", 1.0)
    peers.record("10.0.0.2", 2.0)
    peers.record("10.0.0.1", 3.0)
    peers.record("10.0.0.3", 4.0)  # forgets 10.0.0.2, the oldest
    assert peers.last_poll() == {"10.0.0.1": 3.0, "10.0.0.3": 4.0}
    assert peers.polled_since(3.5) == ["10.0.0.3"]
