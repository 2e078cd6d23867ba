"""The retrying JSON request every upstream adapter shares: session, backoff, error envelope.

One attempt either yields a decoded 2xx response, a retryable failure (network error, 429, 5xx
gateway codes) or raises at once (other 4xx, a 2xx body that is not JSON). Retries use full-jitter
exponential backoff unless the upstream sent ``Retry-After``. Logs name the URL path only: tokens
travel in headers, and bodies are never logged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from syncd.backoff import full_jitter, parse_retry_after
from syncd.errors import UpstreamDataError, UpstreamError
from syncd.metrics import UPSTREAM_REQUESTS, UPSTREAM_RETRIES, child

log = structlog.get_logger(__name__)

# Whose requests these are: the ``source`` label of the upstream metrics. The daemon sets it once in
# each source's tasks (every task they start inherits it); a job adapter passes its provider's
# name to ``request_json`` instead. Empty outside any source (``syncd sync`` sets it per source).
REQUEST_SOURCE: ContextVar[str] = ContextVar("syncd_request_source", default="")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Square's wording; a job adapter passes its own ``status_hints`` to request_json.
STATUS_HINTS: Mapping[int, str] = {
    401: "check square.access_token (missing, expired or revoked)",
    403: "the token lacks a scope (INVENTORY_READ)",
}
# Network failures worth another attempt. aiohttp wraps most socket errors in ClientError, but a
# reset can surface as a bare ConnectionError, and the total timeout as TimeoutError
# (asyncio.TimeoutError is the same class since Python 3.11).
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)
# ...except those a retry cannot fix.
_FATAL_CLIENT_ERRORS = (aiohttp.InvalidURL, aiohttp.ClientConnectorCertificateError)
_ERROR_TEXT_MAX = 200

ErrorParser = Callable[[int, Any], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry: ``max_retries`` retries after the first attempt, delays in seconds."""

    max_retries: int = 5
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    max_retry_after: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """One scheduled retry, as passed to ``on_retry``; ``attempt`` is the failed one (1-based)."""

    op: str
    path: str
    attempt: int
    status: int | None
    backoff_s: float
    error: str


@dataclass(frozen=True, slots=True)
class JsonResponse:
    """A 2xx response: decoded JSON body, headers, and the seconds spent, retries included.

    ``headers`` is aiohttp's case-insensitive, read-only multidict (typed as a plain Mapping).
    """

    status: int
    headers: Mapping[str, str]
    body: Any
    elapsed: float
    attempts: int = 1

    @property
    def date(self) -> str | None:
        """The upstream's ``Date`` header, if it sent one."""
        return self.headers.get("Date")


@dataclass(frozen=True, slots=True)
class _Failure:
    """A retryable outcome of one attempt."""

    status: int | None
    error: str
    vendor_errors: list[dict[str, Any]]
    retry_after: float | None
    exc: BaseException | None = None


def parse_vendor_errors(status: int, body: Any) -> list[dict[str, Any]]:
    """Vendor error objects from a decoded body: Square's ``errors`` or a job API's ``errors[]``.

    Falls back to a single ``{"detail": ...}`` for bodies shaped ``{"error": "..."}``. Never raises.
    """
    if not isinstance(body, dict):
        return []
    errors = body.get("errors")
    if isinstance(errors, list):
        return [e for e in errors if isinstance(e, dict)]
    single = body.get("error")
    if isinstance(single, str) and single:
        return [{"detail": single}]
    return []


def make_session(
    *,
    request_timeout: float,
    connect_timeout: float,
    user_agent: str,
    limit: int = 20,
    limit_per_host: int = 10,
    keepalive_timeout: float = 15.0,
) -> aiohttp.ClientSession:
    """A ClientSession for one upstream: bounded pool, request and connect timeouts, User-Agent.
    ``keepalive_timeout``: how long an idle connection is kept for the next request (a source's
    sessions keep theirs past its poll interval, so a safety-net poll does not reconnect).

    Call from a running event loop; the owner closes it (``await session.close()``) at shutdown.
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        ttl_dns_cache=300,
        keepalive_timeout=keepalive_timeout,
    )
    timeout = aiohttp.ClientTimeout(
        total=request_timeout, connect=connect_timeout, sock_connect=connect_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": user_agent},
        raise_for_status=False,
    )


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    op: str,
    policy: RetryPolicy,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[RetryInfo], None] | None = None,
    error_parser: ErrorParser = parse_vendor_errors,
    status_hints: Mapping[int, str] = STATUS_HINTS,
    source: str | None = None,
) -> JsonResponse:
    """Send one JSON request, retrying transient failures; return the decoded 2xx response.

    Raises ``UpstreamError`` (``retryable=False``) at once for any other non-2xx answer,
    ``UpstreamError`` (``retryable=True``, ``attempts``) once retries are exhausted, and
    ``UpstreamDataError`` for a 2xx body that is not JSON.
    """
    data = orjson.dumps(json_body) if json_body is not None else None
    send_headers = {"Accept": "application/json"}
    if data is not None:
        send_headers["Content-Type"] = "application/json"
    send_headers.update(headers or {})
    path = urlsplit(url).path
    label = REQUEST_SOURCE.get() if source is None else source
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        outcome = await _attempt(
            session, method, url, data, send_headers, (label, op), path, error_parser, status_hints
        )
        if not isinstance(outcome, _Failure):
            return JsonResponse(
                outcome.status, outcome.headers, outcome.body, time.monotonic() - started, attempt
            )
        if attempt > policy.max_retries:
            raise _exhausted(outcome, op=op, path=path, attempts=attempt) from outcome.exc
        delay = _delay(policy, attempt, outcome.retry_after, rand)
        info = RetryInfo(op, path, attempt, outcome.status, delay, outcome.error)
        log.warning(
            "upstream_retry",
            op=op,
            path=path,
            status=outcome.status,
            attempt=attempt,
            backoff_s=round(delay, 3),
            error=outcome.error,
        )
        UPSTREAM_RETRIES.labels(source=label, op=op).inc()
        if on_retry is not None:
            on_retry(info)
        await sleep(delay)


async def _attempt(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes | None,
    headers: Mapping[str, str],
    labels: tuple[str, str],
    path: str,
    error_parser: ErrorParser,
    status_hints: Mapping[int, str],
) -> JsonResponse | _Failure:
    """One HTTP exchange: a 2xx response, a retryable failure, or a raised non-retryable error.
    ``labels`` is (source, op) of the request metric."""
    source, op = labels
    started = time.monotonic()
    try:
        async with session.request(method, url, data=data, headers=headers) as resp:
            raw = await resp.read()
            status, resp_headers = resp.status, resp.headers
    except _FATAL_CLIENT_ERRORS as exc:
        UPSTREAM_REQUESTS.labels(source=source, op=op, status="error").inc()
        raise UpstreamError(
            f"{op}: {_describe(exc)}", op=op, path=path, retryable=False, attempts=1
        ) from exc
    except _NETWORK_ERRORS as exc:
        UPSTREAM_REQUESTS.labels(source=source, op=op, status="error").inc()
        return _Failure(None, _describe(exc), [], None, exc)
    child(UPSTREAM_REQUESTS, source, op, str(status)).inc()
    if 200 <= status < 300:
        body = _decode_ok(raw, status, op=op, path=path)
        return JsonResponse(status, resp_headers, body, time.monotonic() - started)
    vendor_errors = _vendor_errors(error_parser, status, raw)
    if status in RETRY_STATUSES:
        retry_after = parse_retry_after(resp_headers.get("Retry-After"))
        return _Failure(status, _status_text(status, vendor_errors), vendor_errors, retry_after)
    raise UpstreamError(
        f"{op}: {_status_text(status, vendor_errors)} from {path}",
        status=status,
        vendor_errors=vendor_errors,
        retryable=False,
        op=op,
        hint=_hint(status, vendor_errors, status_hints),
        path=path,
        attempts=1,
    )


def _decode_ok(raw: bytes, status: int, *, op: str, path: str) -> Any:
    """Decode a 2xx body; a 204 has none. Anything else that is not JSON is a data error."""
    if status == 204 and not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamDataError(
            f"{op}: HTTP {status} from {path} but the body is not JSON ({len(raw)} bytes)",
            status=status,
            op=op,
            path=path,
        ) from exc


def _vendor_errors(error_parser: ErrorParser, status: int, raw: bytes) -> list[dict[str, Any]]:
    """The vendor errors of a non-2xx body; none when the parser trips on an odd body.

    A parser failure must not hide the HTTP status behind a KeyError or TypeError.
    """
    try:
        return error_parser(status, _decode_quietly(raw))
    except Exception:  # any parser bug: the status still tells the story
        return []


def _decode_quietly(raw: bytes) -> Any:
    """Best-effort decode of an error body (proxies answer with HTML); None when it is not JSON."""
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rand: Callable[[], float]
) -> float:
    """Seconds before the next attempt: the upstream's Retry-After (capped) wins over backoff."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    return full_jitter(
        attempt - 1,
        initial=policy.backoff_initial,
        factor=policy.backoff_factor,
        cap=policy.backoff_max,
        rand=rand,
    )


def _exhausted(failure: _Failure, *, op: str, path: str, attempts: int) -> UpstreamError:
    """The error raised when the last allowed attempt failed too."""
    return UpstreamError(
        f"{op}: gave up after {attempts} attempts on {path}: {failure.error}",
        status=failure.status,
        vendor_errors=failure.vendor_errors,
        retryable=True,
        retry_after=failure.retry_after,
        op=op,
        path=path,
        attempts=attempts,
    )


def _status_text(status: int, vendor_errors: list[dict[str, Any]]) -> str:
    """``HTTP 503 SERVICE_UNAVAILABLE``: the status plus the first vendor error code, if any."""
    code = _first(vendor_errors, "code") or _first(vendor_errors, "title")
    return f"HTTP {status} {code}" if code else f"HTTP {status}"


def _hint(
    status: int, vendor_errors: list[dict[str, Any]], status_hints: Mapping[int, str]
) -> str | None:
    """What the operator can do: fixed hints for auth failures, the vendor's own words for a 400."""
    if status in status_hints:
        return status_hints[status]
    if status == 400:
        detail = _first(vendor_errors, "detail")
        field = _first(vendor_errors, "field")
        if detail and field:
            return f"{detail} (field: {field})"
        return detail or (f"invalid field: {field}" if field else None)
    return None


def _first(vendor_errors: list[dict[str, Any]], key: str) -> str | None:
    """The first vendor error's ``key`` as text, or None."""
    for err in vendor_errors:
        value = err.get(key)
        if value is not None and value != "":
            return str(value)[:_ERROR_TEXT_MAX]
    return None


def _describe(exc: BaseException) -> str:
    """Short text for a network error; ``str(TimeoutError())`` is empty, so lead with the type."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}"[:_ERROR_TEXT_MAX] if text else name
