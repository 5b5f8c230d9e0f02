"""The agent-check line: words, reasons, the slow-start ramp, maintenance and drain."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

from candor_sidecar.agent import READY_WINDOW, AgentState
from candor_sidecar.agent_process import start_agent_server


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


async def test_the_server_answers_at_once_without_waiting_for_agent_send() -> None:
    state = AgentState(slow_start=0.0, max_conn=5)
    server = start_agent_server(state, "127.0.0.1", 0)
    port = server.port
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = await asyncio.wait_for(reader.read(), 2.0)  # EOF comes right after the line
        assert line == b"up 100% maxconn:5\n"
        writer.close()
        # HAProxy's agent-send, or garbage, before reading: still one line
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x00\xffhello agent\r\n" * 100)
        assert await asyncio.wait_for(reader.readline(), 2.0) == b"up 100% maxconn:5\n"
        writer.close()
    finally:
        server.close()


def _agent_line(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.makefile("rb").readline()


def test_the_agent_process_answers_every_change_the_sidecar_publishes() -> None:
    state = AgentState(slow_start=0.0, max_conn=None)
    server = start_agent_server(state, "127.0.0.1", 0)
    try:
        assert server.pid != os.getpid()
        assert _agent_line(server.port) == b"up 100%\n"
        state.update(True, "memory 91% > 80% " + "x" * 100_000, False)  # a huge reason is cut, not fatal
        line = _agent_line(server.port)
        assert line.startswith(b"down # memory 91% > 80% xxx") and len(line) < 2048
        os.kill(server.pid, signal.SIGTERM)  # only the sidecar decides when answering stops
        state.drain()
        assert _agent_line(server.port) == b"drain # sidecar terminating\n"
        assert server.answers == 3
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):  # close() took the process and its listener away
        _agent_line(server.port)


def test_with_wait_for_update_nothing_is_answered_before_the_first_evaluation() -> None:
    state = AgentState(slow_start=0.0, max_conn=None)
    server = start_agent_server(state, "127.0.0.1", 0, wait_for_update=True)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # accepted by the kernel, not answered yet
                sock.recv(100)
            state.update(True, "disk /data 95% > 90%", False)
            sock.settimeout(5)
            assert sock.makefile("rb").readline() == b"down # disk /data 95% > 90%\n"
    finally:
        server.close()


def test_a_dead_agent_process_is_replaced_and_its_count_goes_on() -> None:
    state = AgentState(slow_start=0.0, max_conn=None)
    server = start_agent_server(state, "127.0.0.1", 0)
    try:
        assert _agent_line(server.port) == b"up 100%\n"
        assert server.ensure_running()
        first = server.pid
        os.kill(first, signal.SIGKILL)
        time.sleep(0.2)  # let it die; ensure_running reaps it
        assert not server.ensure_running()
        assert server.pid != first
        state.update(False, "", True)
        assert _agent_line(server.port) == b"maint # annotation candor.io/maintenance=true\n"
        assert server.answers == 2  # continued, not reset: a Prometheus counter never goes backwards
    finally:
        server.close()


def test_the_agent_process_holds_no_descriptor_of_the_sidecar_but_its_listener() -> None:
    held = socket.socket()  # e.g. an HTTP connection the sidecar has open when a replacement is forked
    state = AgentState(slow_start=0.0, max_conn=None)
    server = start_agent_server(state, "127.0.0.1", 0)
    try:
        _agent_line(server.port)  # answering: past its set-up
        time.sleep(0.1)  # and done with that connection
        beyond_stdio = [os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.pid}/fd")
                        if int(fd) > 2]
        assert beyond_stdio == [f"socket:[{os.fstat(server.listener.fileno()).st_ino}]"]  # not `held`
    finally:
        server.close()
        held.close()
