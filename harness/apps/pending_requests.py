"""`request_later`: the HTTP request the web-server tests (gunicorn, uvicorn) send to their app without waiting
for it, so a test can act while requests are in flight (kill a worker, stall the loop) and read each outcome
afterwards."""

from __future__ import annotations

import concurrent.futures
import http.client
import itertools

_ids = itertools.count()
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)


def request_later(port: int, route: str, seconds: float) -> tuple[str, concurrent.futures.Future[int | None]]:
    """GET /`route` of the app on `port`, taking `seconds`, from a thread: the request's id and its status to be
    (None when the worker serving it was killed)."""
    request_id = f"{route}-{next(_ids)}"

    def get() -> int | None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("GET", f"/{route}?seconds={seconds}&id={request_id}")
            return connection.getresponse().status
        except (ConnectionError, http.client.HTTPException):
            return None  # the worker serving it was killed
        finally:
            connection.close()

    return request_id, _pool.submit(get)
