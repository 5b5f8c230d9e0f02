"""The HTTPS endpoint the API server calls for pod admission: kopf's WebhookServer, answering every request.

kopf's own endpoint reads the body under aiohttp's 1 MiB cap (a large pod got a 413, so the API
server, with `failurePolicy: Ignore`, admitted it without a sidecar and without a word) and lets
anything but a JSON syntax error escape as a plain-text 500. Here every body that is an
AdmissionReview with a request uid gets a valid AdmissionReview back, whatever happens inside (an
error becomes an allowed answer with a warning naming it), and every other body gets a 4xx whose
JSON says why. Reading the body is bounded in size and time, so a slow or endless client never
holds a handler.
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

# The API server sends at most its own request limit (3 MiB) plus the review's envelope.
MAX_BODY_BYTES = 8 << 20
READ_TIMEOUT_SECONDS = 10.0
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


async def answer(fn: reviews.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
    """One admission request: a valid AdmissionReview for any review with a uid, else a 4xx with a reason."""
    try:
        raw = await asyncio.wait_for(_read_capped(request), READ_TIMEOUT_SECONDS)
    except TimeoutError:
        return refusal(408, f"the request body did not arrive within {READ_TIMEOUT_SECONDS:g}s")
    except BodyTooLarge:
        return refusal(413, f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB")
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

    @staticmethod
    async def _serve(fn: reviews.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
        with metrics.admission_timer():
            return await answer(fn, request)
