"""The HTTPS endpoint the API server calls for pod admission: kopf's WebhookServer, answering every request.

kopf's own endpoint reads the body under aiohttp's 1 MiB cap (a large pod got a 413, so the API
server, with `failurePolicy: Ignore`, admitted it without a sidecar and without a word) and lets
anything but a JSON syntax error escape as a plain-text 500. Here every body that is an
AdmissionReview with a request uid gets a valid AdmissionReview back, whatever happens inside (an
error becomes an allowed answer with a warning naming it), and every other body gets a 4xx whose
JSON says why. Reading the body is bounded in size and time, so a slow or endless client never
holds a handler.

Any pod can reach the port, so no client may make the operator run out of memory (its limit is the
chart's 192Mi): the size a body declares in `Content-Length` is checked before a byte of it is read
(none declared: 411; more than the API server ever sends: 413), and bodies are read and parsed in two
lanes with a fixed number of places, so the memory held by bodies at once is bounded whatever the
number of clients: a JSON tree costs up to ~30 times its text (`[{},{},…]`: 3 bytes of text, a 64-byte
dict and an 8-byte pointer), so bodies with more objects and lists than any pod are refused unparsed,
3 MiB bodies go one at a time and small ones (every ordinary pod) a few at a time. A request that
finds its lane full for `LANE_WAIT_SECONDS` gets a 503: the API server has given up on it by then
anyway (the webhook's timeout is shorter). Under a flood of 160 of the costliest bodies it reads, from
16 clients at once, and 8 MiB ones beside, the operator peaked at 132-142 MiB (idle: 47 MiB; without
the lanes and checks: 259 MiB) and answered a pod review in 0.02-0.06 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp.web
import kopf
from kopf._cogs.structs import reviews

from candor_operator import metrics

logger = logging.getLogger(__name__)

# The API server refuses request bodies over 3 MiB (its MaxRequestBodyBytes), so a review it sends holds at
# most that object plus an envelope of a few KiB (uid, userInfo, options).
MAX_BODY_BYTES = (3 << 20) + (256 << 10)
READ_TIMEOUT_SECONDS = 10.0
# Bodies up to this size (every ordinary pod: a pod with 100 containers is ~100 KiB) share SMALL_LANE places;
# larger ones, up to MAX_BODY_BYTES, go LARGE_LANE at a time. Worst case held at once, text and tree:
# 4 x 256 KiB x ~12 + 1 x 3.25 MiB x ~12 (strings, the costliest per byte under MAX_CONTAINERS) = ~50 MiB
# above an idle operator's ~45 MiB (kopf keeps a copy of the object while it handles it: twice that).
SMALL_BODY_BYTES = 256 << 10
SMALL_LANE, LARGE_LANE = 4, 1
# A JSON object or list costs 56-64 bytes of tree for 2 bytes of text; a pod has a few thousand (a pod with
# 100 containers of 100 env vars: ~25,000). Counting the brackets in the text (those inside strings too) is a
# pass at C speed that keeps `[{},{},…]` from costing 30 times its size.
MAX_CONTAINERS = 100_000
LANE_WAIT_SECONDS = 5.0
MAX_UID_LENGTH = 128
API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class BodyTooLarge(Exception):
    pass


def refusal(status: int, reason: str) -> aiohttp.web.Response:
    """A 4xx for a body that is not an AdmissionReview we can answer; the JSON says why."""
    return aiohttp.web.json_response({"error": reason}, status=status)


def review_problem(data: object) -> str | None:
    """Why `data` is no AdmissionReview request we could answer, or None when it is one."""
    if not isinstance(data, dict):
        return f"expected an AdmissionReview object, got a JSON {type(data).__name__}"
    request = data.get("request")
    if not isinstance(request, dict):
        return "request: missing (an AdmissionReview must carry a request object)"
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return "request.uid: missing (an answer must echo the request's uid)"
    if len(uid) > MAX_UID_LENGTH:
        return f"request.uid: longer than {MAX_UID_LENGTH} characters"
    return None


def allowed_with_warning(data: dict[str, Any], warning: str) -> dict[str, Any]:
    """An answer that admits the object unchanged and tells its creator why nothing was added."""
    return {
        "apiVersion": data.get("apiVersion") if data.get("apiVersion") in API_VERSIONS else API_VERSIONS[0],
        "kind": "AdmissionReview",
        "response": {"uid": data["request"]["uid"], "allowed": True, "warnings": [warning]},
    }


async def _read_capped(request: aiohttp.web.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def size_problem(request: aiohttp.web.Request) -> aiohttp.web.Response | None:
    """A refusal for a body whose declared size is missing or larger than any review, before reading it."""
    declared = request.content_length
    if declared is None:
        return refusal(411, "Content-Length: missing (the API server always sends it; chunked bodies are refused)")
    if declared > MAX_BODY_BYTES:
        return refusal(413, f"Content-Length: {declared} bytes is more than an AdmissionReview can be "
                            f"({MAX_BODY_BYTES} bytes: the API server's 3 MiB request limit and the envelope)")
    return None


class Lanes:
    """The places bodies are read, parsed and answered in: a few small ones at once, large ones alone."""

    def __init__(self) -> None:
        self.small = asyncio.Semaphore(SMALL_LANE)
        self.large = asyncio.Semaphore(LARGE_LANE)

    def lane(self, declared: int) -> asyncio.Semaphore:
        return self.small if declared <= SMALL_BODY_BYTES else self.large


async def answer(fn: reviews.WebhookFn, request: aiohttp.web.Request, lanes: Lanes) -> aiohttp.web.Response:
    """One admission request: a valid AdmissionReview for any review with a uid, else a 4xx/5xx with a reason."""
    refused = size_problem(request)
    if refused is not None:
        return refused
    lane = lanes.lane(request.content_length or 0)
    try:
        await asyncio.wait_for(lane.acquire(), LANE_WAIT_SECONDS)
    except TimeoutError:
        return refusal(503, f"every place for a body of this size was busy for {LANE_WAIT_SECONDS:g}s")
    try:
        return await _answer_read(fn, request)
    finally:
        lane.release()


async def _answer_read(fn: reviews.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
    try:
        raw = await asyncio.wait_for(_read_capped(request), READ_TIMEOUT_SECONDS)
    except TimeoutError:
        return refusal(408, f"the request body did not arrive within {READ_TIMEOUT_SECONDS:g}s")
    except BodyTooLarge:
        return refusal(413, f"the request body is longer than its Content-Length or {MAX_BODY_BYTES} bytes")
    if raw[:1] != b"{" and raw.lstrip()[:1] != b"{":
        # Every AdmissionReview is a JSON object: anything else is refused before it costs a parse.
        return refusal(400, "expected an AdmissionReview object: the body does not start with '{'")
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > MAX_CONTAINERS:
        return refusal(413, f"the body holds {containers} JSON objects and lists (a pod has a few thousand; "
                            f"at most {MAX_CONTAINERS} are read)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        return refusal(400, f"the body is not UTF-8 (invalid byte at offset {error.start})")
    except json.JSONDecodeError as error:
        return refusal(400, f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}")
    except RecursionError:
        return refusal(400, "the body is nested too deeply to be an AdmissionReview")
    problem = review_problem(data)
    if problem is not None:
        return refusal(400, problem)
    sslpeer = request.transport.get_extra_info("peercert") if request.transport else None
    try:
        response: dict[str, Any] = dict(await fn(data, webhook=request.match_info.get("id"), sslpeer=sslpeer,
                                                 headers=dict(request.headers)))
    except Exception as error:
        logger.warning("admission request %s not handled: %s", data["request"]["uid"][:MAX_UID_LENGTH], error)
        metrics.admission("error")
        reason = str(error)[:200] or type(error).__name__
        return aiohttp.web.json_response(allowed_with_warning(data, f"candor: no sidecar added: {reason}"))
    response["kind"] = "AdmissionReview"
    if response.get("apiVersion") not in API_VERSIONS:
        response["apiVersion"] = API_VERSIONS[0]
    return aiohttp.web.json_response(response)


class AdmissionServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server (certificates, reloading them) with `answer` serving each request."""

    _lanes: Lanes | None = None

    async def _serve(self, fn: reviews.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        if self._lanes is None:  # made in the serving loop, on first use
            self._lanes = Lanes()
        with metrics.admission_timer():
            return await answer(fn, request, self._lanes)
