"""The connection budget over real sockets: over it, connections are dropped and counted; both ports share it."""

from __future__ import annotations

import asyncio
import socket

from candor_sidecar.agent import AgentState
from candor_sidecar.agent_server import AgentServer
from candor_sidecar.descriptors import ACCEPT_BURST, RESERVED, ConnectionBudget
from candor_sidecar.http_server import HttpServer, Request, Response


def _ok(request: Request) -> Response:
    return Response(200, b"ok")


async def _until(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)


def test_the_budget_leaves_descriptors_for_the_journals() -> None:
    # Two accept rounds (one per listener) are held before any connection is admitted or dropped.
    assert ConnectionBudget.for_open_file_limit(1024).limit == 1024 - RESERVED - 2 * ACCEPT_BURST
    assert ConnectionBudget.for_open_file_limit(1 << 20).limit == 50_000
    assert ConnectionBudget.for_open_file_limit(100).limit == 16  # a floor: the probes still get through


async def test_connections_over_the_shared_budget_are_dropped_and_counted() -> None:
    budget = ConnectionBudget(3)
    http = HttpServer(_ok, budget=budget)
    agent = AgentServer(AgentState(slow_start=0.0, max_conn=None), budget=budget)
    http_port, agent_port = await http.start("127.0.0.1", 0), await agent.start("127.0.0.1", 0)
    held = [await asyncio.open_connection("127.0.0.1", http_port) for _ in range(3)]
    try:
        await _until(lambda: budget.open == 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", agent_port)
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # dropped: no answer
        writer.close()
        await _until(lambda: budget.refused == 1)
        assert budget.refused == 1 and budget.open == 3
        for _, idle in held:
            idle.close()
        await _until(lambda: budget.open == 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", agent_port)
        assert await asyncio.wait_for(reader.read(), 2.0) == b"up 100%\n"  # room again
        writer.close()
    finally:
        http.close()
        agent.close()


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
