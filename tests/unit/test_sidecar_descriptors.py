"""The connection budgets over real sockets: one per port; a full one makes room from its idle connections."""

from __future__ import annotations

import asyncio
import socket

from candor_sidecar.agent import AgentState
from candor_sidecar.agent_server import AgentServer
from candor_sidecar.descriptors import ACCEPT_BURST, AGENT_CEILING, HTTP_CEILING, RESERVED, ConnectionBudget
from candor_sidecar.http_server import HttpServer, Request, Response


def _ok(request: Request) -> Response:
    return Response(200, b"ok")


async def _until(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)


def test_each_port_has_a_budget_and_together_they_leave_descriptors_for_the_journals() -> None:
    # Two accept rounds per listener (one accepted, one evicted and not closed yet) are held beyond the budgets.
    http, agent = ConnectionBudget.split_open_file_limit(1024)
    assert http.limit + agent.limit == 1024 - RESERVED - 4 * ACCEPT_BURST
    assert agent.limit < http.limit
    http, agent = ConnectionBudget.split_open_file_limit(1 << 20)
    assert (http.limit, agent.limit) == (HTTP_CEILING, AGENT_CEILING)  # memory, not descriptors, bounds them
    http, agent = ConnectionBudget.split_open_file_limit(100)
    assert (http.limit, agent.limit) == (16, 16)  # a floor: the probes still get through


async def test_a_full_port_evicts_its_oldest_idle_connection_and_never_touches_the_other_port() -> None:
    http_budget, agent_budget = ConnectionBudget(3), ConnectionBudget(3)
    http = HttpServer(_ok, budget=http_budget)
    agent = AgentServer(AgentState(slow_start=0.0, max_conn=None), budget=agent_budget)
    http_port, agent_port = await http.start("127.0.0.1", 0), await agent.start("127.0.0.1", 0)
    held = [await asyncio.open_connection("127.0.0.1", http_port) for _ in range(3)]
    try:
        await _until(lambda: http_budget.open == 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", agent_port)
        assert await asyncio.wait_for(reader.read(), 2.0) == b"up 100%\n"  # the agent's own budget
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 2.0)).endswith(b"ok")  # room made: the oldest idle one went
        writer.close()
        assert await asyncio.wait_for(held[0][0].read(), 2.0) == b""
        assert http_budget.evicted == 1 and http_budget.refused == 0
        for _, idle in held:
            idle.close()
        await _until(lambda: http_budget.open == 0)
        assert http.connections == 0
    finally:
        http.close()
        agent.close()


async def test_when_every_connection_is_busy_a_new_one_is_dropped_and_counted() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response(200, b"late")

    budget = ConnectionBudget(2)
    http = HttpServer(slow, budget=budget)
    port = await http.start("127.0.0.1", 0)
    busy = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        for _, writer in busy:
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await _until(lambda: budget.open == 2 and not budget._evictable)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # dropped: no answer
        writer.close()
        await _until(lambda: budget.refused == 1)
        release.set()
        for reader, _ in busy:
            assert (await asyncio.wait_for(reader.read(), 2.0)).endswith(b"late")
    finally:
        for _, writer in busy:
            writer.close()
        http.close()


async def test_a_burst_waits_in_the_kernel_queue_while_the_loop_is_busy() -> None:
    agent = AgentServer(AgentState(slow_start=0.0, max_conn=None), budget=ConnectionBudget(1000))
    port = await agent.start("127.0.0.1", 0)
    burst: list[socket.socket] = []
    try:
        # Nothing awaits here, so the loop accepts nothing: each connect completes in the kernel's queue
        # alone. A queue as short as one accept round would drop the SYNs after the first ACCEPT_BURST.
        for _ in range(2 * ACCEPT_BURST):
            burst.append(socket.create_connection(("127.0.0.1", port), timeout=3))
        streams = [await asyncio.open_connection(sock=sock) for sock in burst]
        answers = [await asyncio.wait_for(reader.read(), 5.0) for reader, _ in streams]
        assert answers == [b"up 100%\n"] * len(burst)  # then accepted in rounds, every one answered
        for _, writer in streams:
            writer.close()
    finally:
        for sock in burst:
            sock.close()
        agent.close()
