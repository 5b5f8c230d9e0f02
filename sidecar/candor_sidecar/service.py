"""The sidecar process: background evaluation, the agent and HTTP servers, and the termination sequence.

One event loop answers the agent and every HTTP request, so handlers never race each other. The
evaluation's journal reads run on one worker thread (they touch files; serialising them keeps folds
ordered), /metrics reads on another (shared by concurrent scrapes, see scrapes), so the loop only formats
answers from the latest evaluation and stays responsive whatever the journals or the scrapers cost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from candor_sidecar.admin_word import ADMIN_WORDS, read_admin_word, remember_admin_word
from candor_sidecar.agent import AgentState
from candor_sidecar.agent_server import AgentServer
from candor_sidecar.allocator import single_arena
from candor_sidecar.checks import Evaluation, evaluate
from candor_sidecar.config import SidecarConfig
from candor_sidecar.control import ControlServer
from candor_sidecar.descriptors import ConnectionBudget, Exhaustion, is_exhaustion, probe_directory
from candor_sidecar.drain.handshake import DrainHandshake
from candor_sidecar.drain.state import DrainTimes
from candor_sidecar.drain.termination_message import TerminationMessage
from candor_sidecar.health import CONTENT_TYPE, health_document, select
from candor_sidecar.http_server import HttpServer, Limits, Request, Response
from candor_sidecar.load import LoadMeter
from candor_sidecar.load_weight import LoadWeight
from candor_sidecar.metrics import SidecarFacts, render_metrics
from candor_sidecar.podinfo import maintenance_requested, read_annotations
from candor_sidecar.presence import AppPresence
from candor_sidecar.scrapes import SingleFlight
from candor_sidecar.serving import serving_checks
from candor_tracer.pod_contract import DRAIN_WAIT_PATH, LIVENESS_PATH

if TYPE_CHECKING:
    from candor_tracer.journal.reader import JournalSnapshot

log = logging.getLogger("candor.sidecar")
T = TypeVar("T")


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, so thousands of idle clients cannot starve us of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def is_probe_path(path: str) -> bool:
    """Paths a health checker may probe with OPTIONS (HAProxy's `option httpchk <uri>`): answered as GET."""
    path = path.rstrip("/")
    return path in ("/health", LIVENESS_PATH, "/readyz") or path.startswith("/health/")


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        # The sidecar's own directory when it has one (no app process can write it), else the state directory.
        self.admin_dir = (os.path.dirname(config.control_socket) if config.control_socket is not None
                          else config.state_dir)
        self._admin_word = read_admin_word(self.admin_dir)  # maint/drain said and not yet lifted
        self.agent = AgentState(config.slow_start, config.max_conn, lift_admin_state=self._admin_word is not None)
        # Called on every change, before the next agent answer: a maint or drain is on disk before HAProxy can
        # hear it, so a sidecar that crashes right after saying it still gets it lifted by its successor.
        self.agent.on_change(lambda: self._track_admin_word(self.agent.word()))
        # Each port its own budget, sized from the open-file limit at start: no flood of one takes the other.
        self.http_budget, self.agent_budget = ConnectionBudget.split_open_file_limit(1 << 20)
        self.exhaustion = Exhaustion()
        self.agent_server = AgentServer(self.agent, budget=self.agent_budget)
        times = DrainTimes(config.drain.agent_interval, config.drain.max_wait, config.grace_period)
        self.handshake = DrainHandshake(self.agent, self.agent_server.peers, times,
                                        TerminationMessage(config.termination_message_path))
        self.control: ControlServer | None = None
        self.evaluation: Evaluation | None = None
        self.evaluations = 0  # sequence number of self.evaluation: never goes back
        self.presence = AppPresence()  # only the journal worker thread touches it
        # The app's load, and the weight's load factor from it (policy agentCheck.weight): worker thread only.
        self.load_meter = LoadMeter()
        self.load_weight = (LoadWeight(config.load_weight, config.drain.agent_interval / 2)
                            if config.load_weight is not None else None)
        self._health_cache: dict[tuple[str | None, bool, bool], Response] = {}
        self.fold_done = False
        # A /metrics answer has reached a scraper at least once: something scrapes this sidecar, so it will be
        # back for a final scrape after the fold. Never scraped, nothing is coming: no hold at termination.
        self.scraped = False
        self.final_scrape = asyncio.Event()
        self.stop_now = asyncio.Event()
        self.terminate = asyncio.Event()
        limits = Limits(handler_timeout=max(Limits.handler_timeout, times.longest_request))
        self.http = HttpServer(self.handle, limits, options_as_get=is_probe_path, budget=self.http_budget)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="candor-journal")
        self.scrapes = SingleFlight(self._read_snapshot, "candor-scrape")
        self._closers: list[Callable[[], None]] = []
        self._last_word = ""

    # journals -----------------------------------------------------------------------------------------
    async def _in_worker(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def _read_snapshot(self) -> JournalSnapshot:
        from candor_tracer.journal.reader import read_totals  # the tracer is imported once, lazily

        return read_totals(self.config.state_dir)

    def _read_writers(self) -> JournalSnapshot:
        """The checks need the writers, not the series: decoding every series each second would cost more
        than everything else the sidecar does while idle."""
        from candor_tracer.journal.reader import read_writers

        return read_writers(self.config.state_dir)

    def _fold(self) -> int:
        from candor_tracer.journal.reader import fold_dead_writers

        return fold_dead_writers(self.config.state_dir)

    # evaluation ---------------------------------------------------------------------------------------
    def _evaluate_now(self) -> Evaluation:
        """Runs on the journal worker thread."""
        snapshot: JournalSnapshot | None
        try:
            snapshot, error = self._read_writers(), None
        except Exception as exc:  # reported as a warning by the journal check; the other checks still run
            log.debug("reading the journals failed", exc_info=True)
            snapshot, error = None, f"{type(exc).__name__}: {exc}"
            if is_exhaustion(exc):
                self.exhaustion.seen("reading the state directory", exc)
        if snapshot is not None and not snapshot.writers:
            # No writer seen: make sure that is not a listing that failed for lack of descriptors, which
            # would read as "the app exited". Unknown is said as unknown (a warning), never as down.
            exhausted = probe_directory(self.config.state_dir)
            if exhausted is not None:
                self.exhaustion.seen("reading the state directory", exhausted)
                snapshot, error = None, f"out of file descriptors: {exhausted}"
        monotonic = time.monotonic()
        absence = self.presence.observe(snapshot)
        reading = (self.load_meter.read(snapshot.writers, snapshot.now) if snapshot is not None
                   else self.load_meter.read(()))
        load = self.load_weight.update(reading, monotonic) if self.load_weight is not None else None
        checks = (*evaluate(self.config, snapshot, error, now=monotonic, absence=absence, meter=self.load_meter,
                            load=load),
                  *serving_checks(self.config.app_ports))
        maintenance = maintenance_requested(read_annotations(self.config.pod_info_dir))
        return Evaluation(checks, time.time(), monotonic, maintenance, snapshot, load)

    def _apply(self, evaluation: Evaluation) -> None:
        previous = self.evaluation
        self.evaluation = evaluation
        self.evaluations += 1
        self._health_cache = {}
        failing = evaluation.failing()
        if evaluation.load is not None:
            load = evaluation.load
            if previous is not None and previous.load is not None and previous.load.factor != load.factor:
                log.info("load factor %d%% -> %d%%%s", previous.load.factor, load.factor,
                         f": {load.reason} ({load.detail})" if load.reason else "")
            self.agent.set_load(load.factor, load.figure, load.reason)
        self.agent.update(bool(failing), "; ".join(check.reason for check in failing), evaluation.maintenance)
        if previous is None or previous.status != evaluation.status:
            problems = [f"{c.key}={c.status} ({c.output})" for c in evaluation.checks if c.status != "pass"]
            log.info("health %s%s", evaluation.status, (": " + "; ".join(problems)) if problems else "")
        word = self.agent.word()
        if word != self._last_word:
            log.info("agent answers %s", self.agent.line().decode().strip())
            self._last_word = word

    def _track_admin_word(self, word: str) -> None:
        """Remember a maint or drain HAProxy will hold; forget it once `ready` has been said long enough."""
        if word in ADMIN_WORDS:
            if word != self._admin_word:
                self._admin_word = word
                remember_admin_word(self.admin_dir, word)
        elif self._admin_word is not None and not self.agent.saying_ready():
            self._admin_word = None
            remember_admin_word(self.admin_dir, None)

    async def _evaluation_loop(self) -> None:
        interval = self.config.evaluation_interval
        next_at = time.monotonic()
        while True:
            next_at += interval
            try:
                self._apply(await self._in_worker(self._evaluate_now))
            except Exception:  # keep evaluating: a stale answer is worse than one failed round
                log.exception("evaluation failed")
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (suspended, overloaded): do not burst to catch up
                next_at, delay = time.monotonic(), 0.0
            await asyncio.sleep(delay)

    # HTTP ---------------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path.rstrip("/") or "/"
        if path == "/health" or path.startswith("/health/"):
            self.handshake.saw_health_request(request)
            return self._health(request, path[len("/health/"):] if path != "/health" else None)
        if path == LIVENESS_PATH:
            return self._livez()
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics":
            return self._metrics(request)
        if path == DRAIN_WAIT_PATH:
            return self.handshake.wait(request)
        if path == "/":
            return Response(200, b"candor sidecar: /health /health/<check> /livez /readyz /metrics /drain/wait\n")
        return Response(404, b"not found; try /health, /livez, /readyz or /metrics\n")

    def _health(self, request: Request, name: str | None) -> Response:
        # Documents change only with an evaluation (or a drain): build each once, serve it many times. A
        # verbose one during a drain says how far the drain got, which changes between evaluations.
        key = (name, request.flag("verbose"), self.handshake.draining)
        cached = self._health_cache.get(key)
        if cached is None:
            cached = self._health_document(name, key[1])
            # /health/<any> must not grow it; a verbose one during a drain is never kept
            if len(self._health_cache) < 64 and not (key[1] and self.handshake.under_way):
                self._health_cache[key] = cached
        return cached

    def _health_document(self, name: str | None, verbose: bool) -> Response:
        evaluation = self.evaluation
        if evaluation is None:
            return Response(503, b'{"status":"warn","output":"not evaluated yet"}\n', CONTENT_TYPE)
        checks = evaluation.checks if name is None else select(evaluation.checks, name)
        if name is not None and not checks:
            known = sorted({check.key for check in evaluation.checks})
            return Response(404, f"unknown check {name!r}; known: {', '.join(known)}\n".encode())
        drain_note = self.handshake.state_note()
        notes = [] if drain_note is None else [drain_note]
        if evaluation.maintenance:
            notes.append("maintenance annotation set: the agent answers maint")
        if verbose and self.handshake.under_way:
            notes.append(self.handshake.note())
        status, body = health_document(evaluation, checks, verbose, notes)
        # A client comparing answers can tell a newer evaluation from an older one by this number.
        return Response(status, body, CONTENT_TYPE, headers=[("Candor-Evaluation", str(self.evaluations))])

    def _livez(self) -> Response:
        evaluation = self.evaluation
        budget = max(3 * self.config.evaluation_interval, 5.0)
        if evaluation is None or time.monotonic() - evaluation.monotonic > budget:
            return Response(503, b"evaluation loop stalled\n")
        if self.exhaustion.within(budget):
            return Response(503, b"out of file descriptors\n")
        return Response(200, b"ok\n")

    def _readyz(self) -> Response:
        evaluation = self.evaluation
        reasons = []
        if evaluation is None:
            reasons.append("not evaluated yet")
        else:
            reasons += [f"{check.key}: {check.reason or check.output}" for check in evaluation.failing()]
            if evaluation.maintenance:
                reasons.append("maintenance annotation set")
        if self.handshake.draining:
            reasons.append("terminating")
        if reasons:
            return Response(503, ("not ready: " + "; ".join(reasons) + "\n").encode())
        return Response(200, b"ok\n")

    async def _metrics(self, request: Request) -> Response:
        after_fold = self.fold_done  # this scrape's snapshot is taken after the final fold
        flight = self.scrapes.join(after_fold)  # scrapes that come together share one read and one rendering
        snapshot: JournalSnapshot | None
        try:
            snapshot = await asyncio.shield(flight.future)  # one scrape leaving does not cancel the others' read
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Candor's own gauges are still worth a scrape; the gap is counted
            if not flight.rendered:  # said once per read, not once per scrape that shared it
                log.warning("/metrics: reading the journals failed: %s: %s", type(exc).__name__, exc)
                if is_exhaustion(exc):
                    self.exhaustion.seen("reading the state directory", exc)
            snapshot = None
        accept = request.headers.get("accept", "")
        rendered = flight.rendered.get(accept)
        if rendered is None:
            facts = SidecarFacts(self.evaluation, self.agent.weight_percent(), self.agent.word(),
                                 self.handshake.draining, self.agent_server.answers, self.exhaustion.count,
                                 self.http_budget.refused + self.agent_budget.refused,
                                 self.http_budget.evicted + self.agent_budget.evicted, self.agent.weight_reason())
            rendered = render_metrics(snapshot, facts, accept, list(self.handshake.families()))
            if len(flight.rendered) < 8:  # Accept headers are the client's: a handful of forms is plenty
                flight.rendered[accept] = rendered
        body, content_type = rendered
        return Response(200, body, content_type,
                        after_sent=self._final_scrape_sent if after_fold else self._scrape_sent)

    def _scrape_sent(self) -> None:
        self.scraped = True

    def _final_scrape_sent(self) -> None:
        self.scraped = True
        self.final_scrape.set()

    # lifecycle ----------------------------------------------------------------------------------------
    def _on_signal(self) -> None:
        if self.handshake.terminating:
            log.warning("second termination signal: exiting at once")
            self.stop_now.set()
            return
        log.info("termination signal: agent answers drain, folding journals")
        self.handshake.on_sigterm()
        self.terminate.set()

    async def start(self) -> None:
        single_arena()  # before the journal threads start
        limit = raise_open_file_limit()
        http_budget, agent_budget = ConnectionBudget.split_open_file_limit(limit)
        self.http_budget.limit, self.agent_budget.limit = http_budget.limit, agent_budget.limit
        asyncio.get_running_loop().set_exception_handler(self._loop_exception)
        try:  # the shared volume normally exists; locally the sidecar may be first
            os.makedirs(self.config.state_dir, exist_ok=True)
        except OSError as error:
            log.warning("cannot create the state directory %s: %s", self.config.state_dir, error)
        if self.admin_dir != self.config.state_dir:  # the control socket's; made here so a first maint is kept
            try:
                os.makedirs(self.admin_dir, mode=0o700, exist_ok=True)
            except OSError as error:
                log.warning("cannot create %s: %s", self.admin_dir, error)
        # Listen only after the first evaluation: the agent never answers from a state nobody decided.
        try:
            self._apply(await self._in_worker(self._evaluate_now))
            await self.agent_server.start(self.config.agent.address, self.config.agent.port)
            self._closers.append(self.agent_server.close)
            await self.http.start(self.config.http.address, self.config.http.port)
            self._closers.append(self.http.close)
            await self._start_control()
        except BaseException:  # e.g. the HTTP port is taken: no listener left behind
            self._close()
            raise
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        # Everything imported and built so far lives as long as the process: take it out of the collector's
        # view, so the collections that do run while answering scan only what was allocated since.
        gc.freeze()
        log.info("listening: http %s:%d, agent %s:%d, state dir %s (open files %d; connections: http %d, agent %d)",
                 self.config.http.address, self.config.http.port, self.config.agent.address, self.config.agent.port,
                 self.config.state_dir, limit, self.http_budget.limit, self.agent_budget.limit)

    async def run(self) -> int:
        """Serves until SIGTERM has been handled; the exit status."""
        await self.start()
        evaluator = asyncio.create_task(self._evaluation_loop())
        terminated = asyncio.create_task(self.terminate.wait())
        stopped = asyncio.create_task(self.stop_now.wait())
        await asyncio.wait([terminated, stopped], return_when=asyncio.FIRST_COMPLETED)
        status = 0
        if not self.stop_now.is_set():
            shutdown = asyncio.create_task(self._final_sequence())
            await asyncio.wait([shutdown, stopped], return_when=asyncio.FIRST_COMPLETED)
            if self.stop_now.is_set():
                shutdown.cancel()
                status = 143
        else:
            status = 143
        evaluator.cancel()
        terminated.cancel()
        stopped.cancel()
        self.handshake.at_exit()  # the kubelet reads the termination message once the process has exited
        self._close()
        return status

    async def _start_control(self) -> None:
        path = self.config.control_socket
        if path is None:
            return
        control = ControlServer(path, {"drain": self.handshake.control})
        try:
            await control.start()
        except OSError as error:  # the sidecar still serves; only the preStop drain is missing, so say it loudly
            log.error("no control socket at %s (%s): `candor sidecar drain` cannot reach this sidecar; a drain "
                      "starts with SIGTERM only", path, error)
            return
        self.control = control
        self._closers.append(control.close)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        """asyncio pauses a listener for a second when accept() runs out of descriptors, and reports it here."""
        error = context.get("exception")
        if is_exhaustion(error):
            self.exhaustion.seen("accepting a connection", error)
            return
        loop.default_exception_handler(context)

    def _close(self) -> None:
        for close in self._closers:
            close()
        self._closers = []
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.scrapes.shutdown()

    async def _final_sequence(self) -> None:
        """Folds the journals, then holds for one scrape after the fold if anything has ever scraped us.

        A sidecar never scraped has no scraper coming for a final one (Prometheus scrapes each target it
        knows once per interval, so a pod it has found has been scraped): holding would only keep the pod
        finalScrapeTimeout longer and slow every rollout. The cost: a pod that leaves before its first scrape
        (it lived less than one scrape interval, or Prometheus had not found it yet) takes its journals'
        seconds with it, folded but never read."""
        try:
            folded = await self._in_worker(self._fold)
        except Exception:
            log.exception("final fold failed")
            folded = 0
        self.fold_done = True
        self._apply(await self._in_worker(self._evaluate_now))
        if not self.scraped:
            log.info("folded %d journals; /metrics was never scraped, so no final scrape is coming: exiting",
                     folded)
            return
        timeout = self.config.final_scrape_timeout
        log.info("folded %d journals; serving until one /metrics scrape or %.0fs", folded, timeout)
        try:
            await asyncio.wait_for(self.final_scrape.wait(), timeout)
            log.info("final scrape served; exiting")
        except TimeoutError:
            log.info("no scrape within finalScrapeTimeout; exiting")


async def run_sidecar(config: SidecarConfig) -> int:
    return await Sidecar(config).run()

