"""Concurrent /metrics scrapes share one journal read, on a thread that is not the evaluation's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from candor_sidecar.config import parse_config
from candor_sidecar.http_server import Request
from candor_sidecar.service import Sidecar


def _scrape() -> Request:
    return Request("GET", "/metrics", {}, {}, "HTTP/1.1")


async def test_scrapes_that_come_together_share_one_read_and_one_rendering(tmp_path: Path) -> None:
    sidecar = Sidecar(parse_config({"stateDir": str(tmp_path / "state"), "podInfoDir": str(tmp_path / "podinfo")}))
    threads: set[str] = set()
    read = sidecar._read_snapshot

    def recording_read() -> object:
        threads.add(threading.current_thread().name)
        return read()

    sidecar.scrapes._read = recording_read  # type: ignore[assignment]
    try:
        sidecar._apply(await sidecar._in_worker(sidecar._evaluate_now))
        answers = await asyncio.gather(*(sidecar._metrics(_scrape()) for _ in range(50)))
        assert sidecar.scrapes.reads == 1
        assert len({id(answer.body) for answer in answers}) == 1  # one body, shared
        assert b"candor_drain_seconds_bucket" in answers[0].body
        await sidecar._metrics(_scrape())  # after the flight landed: a fresh read
        assert sidecar.scrapes.reads == 2
        assert all(name.startswith("candor-scrape") for name in threads), threads
        # A scrape that must see the final fold never joins a read begun before it.
        early = sidecar.scrapes.join(after_fold=False)
        assert sidecar.scrapes.join(after_fold=True) is not early
        await early.future
    finally:
        sidecar._close()
