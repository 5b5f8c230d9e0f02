"""The hold for a final scrape at termination: only for a sidecar whose /metrics has been scraped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from candor_sidecar.config import parse_config
from candor_sidecar.http_server import Request, Response
from candor_sidecar.service import Sidecar

HANG_GUARD = 60.0  # a bug would hold for finalScrapeTimeout (an hour here): fail instead of hanging


class WatchedEvent(asyncio.Event):
    """The final-scrape event, saying whether anything began waiting on it."""

    waited = False

    async def wait(self) -> Literal[True]:
        self.waited = True
        return await super().wait()


def _sidecar(tmp_path: Path) -> Sidecar:
    sidecar = Sidecar(parse_config({"stateDir": str(tmp_path / "state"), "podInfoDir": str(tmp_path / "podinfo"),
                                    "finalScrapeTimeout": "1h"}))
    sidecar.final_scrape = WatchedEvent()
    return sidecar


def _waited(sidecar: Sidecar) -> bool:
    assert isinstance(sidecar.final_scrape, WatchedEvent)
    return sidecar.final_scrape.waited


async def _scrape(sidecar: Sidecar, sent: bool = True) -> Response:
    response = await sidecar._metrics(Request("GET", "/metrics", {}, {}, "HTTP/1.1"))
    assert response.status == 200 and response.after_sent is not None
    if sent:
        response.after_sent()  # what the HTTP server calls once the body is with the kernel
    return response


async def test_never_scraped_it_folds_and_ends_without_waiting(tmp_path: Path) -> None:
    sidecar = _sidecar(tmp_path)
    try:
        await _scrape(sidecar, sent=False)  # a scrape that never reached its scraper does not count
        assert not sidecar.scraped
        await asyncio.wait_for(sidecar._final_sequence(), HANG_GUARD)
        assert sidecar.fold_done and not _waited(sidecar)
    finally:
        sidecar._close()


async def test_once_scraped_it_holds_until_one_scrape_after_the_fold(tmp_path: Path) -> None:
    sidecar = _sidecar(tmp_path)
    try:
        await _scrape(sidecar)
        assert sidecar.scraped and not sidecar.final_scrape.is_set()  # before the fold: not the final one
        final = asyncio.create_task(sidecar._final_sequence())
        while not (_waited(sidecar) or final.done()):
            await asyncio.sleep(0.01)
        assert sidecar.fold_done and not final.done(), "it holds for the final scrape"
        await _scrape(sidecar)
        await asyncio.wait_for(final, HANG_GUARD)
        assert sidecar.final_scrape.is_set()
    finally:
        sidecar._close()
