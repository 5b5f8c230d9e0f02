"""Sidecar benchmark: agent-check and /health latency while the journals are evaluated, RSS, idle CPU.

    python -m bench.sidecar [--seconds 20]

Targets, measured on `candor sidecar` as a pod runs it, with 16 live journals of 64 series each
evaluated every second:
- agent-check replies p99 <= 5 ms and max <= 50 ms at 100 connections/s;
- /health p99 <= 10 ms at 50 requests/s, at the same time;
- RSS <= 25 MiB after start (the journals read, /metrics and /health served once);
- idle CPU < 1 % of a core.
The floor is a bare asyncio + h11 server answering fixed bytes on both ports: the same loads in rounds
alternating with the sidecar's, so the table shows what this machine adds to any server at that moment.
Prints a table, writes bench/results/sidecar.json and exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.results import Results
from bench.scratch import remove_scratch, scratch_dir
from harness.processes.ports import free_port

TITLE = "Sidecar: answers under load, memory, idle CPU"
ABOUT = """\
`candor sidecar` as a pod runs it, with 16 live journals of 64 series each evaluated every second: HAProxy's
agent-check at 100 connections/s and `/health` at 50 requests/s at the same time (latency from connect to the
complete answer, open loop), its RSS after start and its idle CPU. The floor is a bare asyncio + h11 server
answering fixed bytes on both ports, loaded in rounds alternating with the sidecar's, so the table shows what
this machine adds to any server at that moment."""

ROOT = Path(__file__).resolve().parents[1]
JOURNALS = 16
SERIES_PER_JOURNAL = 64
ROUNDS = 4  # load rounds, alternating between the sidecar and the floor
AGENT_RATE = 100.0  # connections/s
HEALTH_RATE = 50.0  # requests/s, during the agent load
IDLE_SECONDS = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


# --- the load process (this script re-invoked with --load) ---------------------------------------------
#
# One process drives both streams from one epoll loop: each connection starts at its scheduled time (open
# loop, whatever the previous ones do), its latency is connect -> complete answer on perf_counter_ns, and
# the loop does nothing else, so a slow answer never delays the next connection. The floor is measured
# by the same process, so the figures compare like for like.

HEALTH_REQUEST = b"GET /health HTTP/1.0\r\nHost: bench\r\n\r\n"
CONNECTION_TIMEOUT_NS = 5_000_000_000


class _Stream:
    def __init__(self, kind: str, port: int, rate: float, count: int, start_ns: int) -> None:
        self.kind, self.address, self.rate, self.count = kind, ("127.0.0.1", port), rate, count
        self.start_ns, self.launched = start_ns, 0
        self.latencies_ns: list[int] = []
        self.errors = 0

    def due_ns(self) -> int:
        return self.start_ns + int(self.launched * 1e9 / self.rate)


Pending = dict[int, tuple[_Stream, int, bytearray, socket.socket]]  # fd -> stream, start, answer so far, socket


def _finish(selector: selectors.BaseSelector, sock: socket.socket, pending: Pending, ok: bool, now_ns: int) -> None:
    stream, started_ns, _, _ = pending.pop(sock.fileno())
    selector.unregister(sock)
    sock.close()
    if ok:
        stream.latencies_ns.append(now_ns - started_ns)
    else:
        stream.errors += 1


def run_loads(specs: list[tuple[str, int, float]], seconds: float) -> dict[str, dict[str, Any]]:
    """Open-loop connections for each (kind, port, rate) for `seconds`; per stream the latencies (us)."""
    gc.disable()  # the load process must not pause itself mid-measurement
    clock = time.perf_counter_ns
    begin = clock() + 50_000_000
    streams = [_Stream(kind, port, rate, int(rate * seconds), begin) for kind, port, rate in specs]
    selector = selectors.EpollSelector()
    pending: Pending = {}
    while pending or any(stream.launched < stream.count for stream in streams):
        now = clock()
        for stream in streams:
            while stream.launched < stream.count and stream.due_ns() <= now:
                stream.launched += 1
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                started = clock()
                try:
                    sock.settimeout(CONNECTION_TIMEOUT_NS / 1e9)
                    sock.connect(stream.address)  # loopback: the handshake completes within the call
                    if stream.kind == "health":
                        sock.sendall(HEALTH_REQUEST)
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    stream.errors += 1
                    continue
                pending[sock.fileno()] = (stream, started, bytearray(), sock)
                selector.register(sock, selectors.EVENT_READ)
        upcoming = [stream.due_ns() for stream in streams if stream.launched < stream.count]
        timeout = max(0.0, (min(upcoming) - clock()) / 1e9) if upcoming else 0.1
        for key, _ in selector.select(timeout):
            stream, started, buffer, sock = pending[key.fd]
            try:
                chunk = sock.recv(65536)
            except OSError:
                _finish(selector, sock, pending, False, clock())
                continue
            buffer += chunk
            if stream.kind == "agent" and (b"\n" in buffer or not chunk):
                _finish(selector, sock, pending, buffer.startswith(b"up ") and buffer.endswith(b"\n"), clock())
            elif stream.kind == "health" and not chunk:
                _finish(selector, sock, pending, buffer.startswith(b"HTTP/1.1 200"), clock())
        now = clock()
        for _stream, started, _, sock in list(pending.values()):
            if now - started > CONNECTION_TIMEOUT_NS:
                _finish(selector, sock, pending, False, now)
    return {stream.kind: {"latencies_us": [value // 1000 for value in stream.latencies_ns], "errors": stream.errors,
                          "sent": stream.launched} for stream in streams}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """One stream's figures over every round it ran in (ms)."""
    latencies = [value / 1000 for one in rounds for value in one["latencies_us"]]
    return {"count": len(latencies), "errors": sum(one["errors"] for one in rounds),
            "sent": sum(one["sent"] for one in rounds),
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "max": max(latencies, default=float("nan"))}


# --- the floor: a bare asyncio + h11 server answering fixed bytes -------------------------------------

FLOOR_SERVER = """
import asyncio, sys
import h11

BODY = b'{"status":"pass"}'

class Agent(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"up 100%\\n")
        transport.write_eof()

    def eof_received(self):
        return False

class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.conn = transport, h11.Connection(h11.SERVER)

    def data_received(self, data):
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Request):
                headers = [("content-type", "application/health+json"), ("content-length", str(len(BODY)))]
                self.transport.write(self.conn.send(h11.Response(status_code=200, headers=headers)))
                self.transport.write(self.conn.send(h11.Data(data=BODY)) + self.conn.send(h11.EndOfMessage()))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                if self.conn.our_state is h11.MUST_CLOSE or event is h11.ConnectionClosed:
                    self.transport.close()
                    return

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(Agent, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await loop.create_server(Http, "127.0.0.1", int(sys.argv[2]), backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


# --- 16 live journals of 64 series ---------------------------------------------------------------------

JOURNAL_WRITERS = """
import sys, time
from prometheus_client import Counter
from candor_tracer import Tracer
state_dir, journals, series = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
counter = Counter("job_worked_seconds", "Seconds spent working on jobs", ["task", "worker"], registry=None)
tracers, held = [], []
for index in range(journals):
    tracer = Tracer(state_dir=state_dir)
    tracers.append(tracer)
    for task in range(series):
        with tracer.trace(counter, task=f"task-{task}", worker=str(index)):
            pass
    for task in range(4):  # some work in flight, as in a busy pod
        running = tracer.trace(counter, task=f"task-{task}", worker=str(index))
        running.__enter__()
        held.append(running)
print("ready", flush=True)
while True:
    for tracer in tracers:
        tracer.heartbeat()
    time.sleep(0.2)
"""


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body


def _wait_answering(port: int, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before answering")
        try:
            _get(port, "/livez")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not answer within 30 s") from None
            time.sleep(0.05)


def _load_round(agent_port: int, http_port: int, seconds: float) -> dict[str, dict[str, Any]]:
    process = subprocess.Popen([sys.executable, "-m", "bench.sidecar", "--load", f"{agent_port},{http_port}",
                                "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        results: dict[str, dict[str, Any]] = json.loads(process.communicate(timeout=seconds + 60)[0])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return results


def _evaluation_age(http_port: int) -> float:
    """Seconds since the sidecar's latest background evaluation (from its own gauge)."""
    for line in _get(http_port, "/metrics").decode().splitlines():
        if line.startswith("candor_last_evaluation_timestamp_seconds "):
            return time.time() - float(line.split()[1])
    return float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per server, over all rounds")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # "AGENT_PORT,HTTP_PORT"
    args = parser.parse_args()
    if args.load:
        agent_port, http_port = (int(port) for port in args.load.split(","))
        print(json.dumps(run_loads([("agent", agent_port, AGENT_RATE), ("health", http_port, HEALTH_RATE)],
                                   args.seconds), separators=(",", ":")))
        return 0

    workdir = scratch_dir("candor-bench-sidecar-")
    state_dir = workdir / "state"
    state_dir.mkdir()
    http_port, agent_port, floor_agent, floor_http = free_port(), free_port(), free_port(), free_port()
    config = workdir / "sidecar.yaml"
    config.write_text(json.dumps({
        "stateDir": str(state_dir), "podInfoDir": str(workdir / "podinfo"), "slowStart": "0s", "maxConn": 30,
        "http": {"port": http_port, "address": "127.0.0.1"}, "agent": {"port": agent_port, "address": "127.0.0.1"},
        "disk": {"paths": [str(workdir)], "maxPercent": 100}, "evaluationInterval": "1s"}))
    children: list[subprocess.Popen[str]] = []
    try:
        writers = subprocess.Popen([sys.executable, "-c", JOURNAL_WRITERS, str(state_dir), str(JOURNALS),
                                    str(SERIES_PER_JOURNAL)], stdout=subprocess.PIPE, text=True)
        children.append(writers)
        assert writers.stdout is not None and writers.stdout.readline().strip() == "ready"
        journals = len(list(state_dir.glob("journal-*")))
        # What the operator injects: `candor sidecar --config …` (candor_cli.main is that console script).
        sidecar = subprocess.Popen([sys.executable, "-m", "candor_cli.main", "sidecar", "--config", str(config),
                                    "--log-level", "warning"], text=True)
        children.append(sidecar)
        _wait_answering(http_port, sidecar, "the sidecar")
        series = sum(1 for line in _get(http_port, "/metrics").decode().splitlines()
                     if line.startswith("job_worked_seconds_total{"))
        _get(http_port, "/health")
        time.sleep(3.0)  # a few evaluations of every journal
        rss_start = _rss_bytes(sidecar.pid) / MIB

        cpu_before, wall_before = _cpu_seconds(sidecar.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_cpu = 100 * (_cpu_seconds(sidecar.pid) - cpu_before) / (time.monotonic() - wall_before)

        floor = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_agent), str(floor_http)],
                                 stdout=subprocess.PIPE, text=True)
        children.append(floor)
        assert floor.stdout is not None and floor.stdout.readline().strip() == "ready"
        floor_rss = _rss_bytes(floor.pid) / MIB
        sidecar_rounds: list[dict[str, dict[str, Any]]] = []
        floor_rounds: list[dict[str, dict[str, Any]]] = []
        sidecar_cpu = floor_cpu = 0.0
        for _ in range(ROUNDS):  # the two take turns, so both meet the same moments of a shared machine
            cpu_before = _cpu_seconds(sidecar.pid)
            sidecar_rounds.append(_load_round(agent_port, http_port, args.seconds / ROUNDS))
            sidecar_cpu += _cpu_seconds(sidecar.pid) - cpu_before
            cpu_before = _cpu_seconds(floor.pid)
            floor_rounds.append(_load_round(floor_agent, floor_http, args.seconds / ROUNDS))
            floor_cpu += _cpu_seconds(floor.pid) - cpu_before
        evaluation_age = _evaluation_age(http_port)
        rss_after_load = _rss_bytes(sidecar.pid) / MIB
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait()
        remove_scratch(workdir)

    agent, floor_agent_figures = summarize([r["agent"] for r in sidecar_rounds]), summarize(
        [r["agent"] for r in floor_rounds])
    health, floor_health = summarize([r["health"] for r in sidecar_rounds]), summarize(
        [r["health"] for r in floor_rounds])
    cpu_per_answer_us = 1e6 * sidecar_cpu / max(agent["count"] + health["count"], 1)
    floor_cpu_per_answer_us = 1e6 * floor_cpu / max(floor_agent_figures["count"] + floor_health["count"], 1)
    evaluated = journals == JOURNALS and series == JOURNALS * SERIES_PER_JOURNAL and evaluation_age < 2.5
    rows: list[tuple[Any, ...]] = [
        (f"journals x series, evaluated every 1 s (latest {evaluation_age:.1f} s ago)",
         f"{JOURNALS} x {SERIES_PER_JOURNAL}", f"{journals} x {series // max(journals, 1)}", "", evaluated),
        ("agent reply p99 at 100 conn/s", "<= 5 ms", f"{agent['p99']:.2f} ms", f"{floor_agent_figures['p99']:.2f} ms",
         agent["p99"] <= 5.0, floor_agent_figures["p99"] <= 5.0),
        ("agent reply max", "<= 50 ms", f"{agent['max']:.2f} ms", f"{floor_agent_figures['max']:.2f} ms",
         agent["max"] <= 50.0, floor_agent_figures["max"] <= 50.0),
        ("agent reply p50", "", f"{agent['p50']:.2f} ms", f"{floor_agent_figures['p50']:.2f} ms", True),
        ("agent answered / errors", "all, 0", f"{agent['count']:.0f}/{agent['sent']:.0f}, {agent['errors']:.0f}",
         f"{floor_agent_figures['count']:.0f}, {floor_agent_figures['errors']:.0f}",
         agent["errors"] == 0 and agent["count"] == agent["sent"]),
        ("/health p99 at 50 req/s, during the agent load", "<= 10 ms", f"{health['p99']:.2f} ms",
         f"{floor_health['p99']:.2f} ms", health["p99"] <= 10.0, floor_health["p99"] <= 10.0),
        ("/health p50 / max", "", f"{health['p50']:.2f} / {health['max']:.1f} ms",
         f"{floor_health['p50']:.2f} / {floor_health['max']:.1f} ms", True),
        ("/health answered / errors", "all, 0", f"{health['count']:.0f}/{health['sent']:.0f}, {health['errors']:.0f}",
         f"{floor_health['count']:.0f}, {floor_health['errors']:.0f}",
         health["errors"] == 0 and health["count"] == health["sent"]),
        ("sidecar RSS after start", "<= 25 MiB", f"{rss_start:.1f} MiB", f"{floor_rss:.1f} MiB", rss_start <= 25.0),
        ("sidecar RSS after the load", "", f"{rss_after_load:.1f} MiB", "", True),
        ("sidecar idle CPU (evaluating every 1 s)", "< 1 % of a core", f"{idle_cpu:.2f} %", "", idle_cpu < 1.0),
        ("CPU per answered connection under load (sidecar: evaluations included)", "", f"{cpu_per_answer_us:.0f} us",
         f"{floor_cpu_per_answer_us:.0f} us", True),
    ]
    width = max(len(row[0]) for row in rows)
    results = Results("sidecar")
    table = results.table("sidecar benchmark", "target", "sidecar", "floor", "result")
    print(f"{'sidecar benchmark':<{width}}  {'target':<16} {'sidecar':<18} {'floor':<18} result")
    for name, target, measured, floor_figure, ok, *floor_ok in rows:
        result = "ok" if ok else "MISS (the floor misses too: a busy machine)" if floor_ok == [False] else "MISS"
        print(f"{name:<{width}}  {target:<16} {measured:<18} {floor_figure:<18} {result}")
        table.add(name, target, measured, floor_figure, result if target else "")
        if target:
            results.target(name, target, measured, ok)
    print("floor: a bare asyncio + h11 server answering fixed bytes, the same loads in alternating rounds")
    results.note("floor: a bare asyncio + h11 server answering fixed bytes, the same loads in alternating rounds")
    results.write()
    return 0 if all(row[4] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
