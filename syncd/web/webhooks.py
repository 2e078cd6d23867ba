"""``POST /webhooks/{source}`` and ``POST /webhooks``: size limit -> verify -> parse -> inbox
commit -> poke -> answer.

``/webhooks/{source}`` serves one named source. ``/webhooks`` is the one notification URL of an app
that many sellers authorised (issue 11): the event's ``merchant_id`` picks the source, whose keys
verify it. An event whose merchant no source knows (yet) must still carry a signature by one of the
configured apps' keys; it is stored under the source ``_unknown`` (handed to its source once that
source learns its merchant id), counted, and answered 200 so that Square does not retry it for 72
hours. ``oauth.authorization.revoked`` asks that source to check its grant at once;
``catalog.version.updated`` (and ``location.created`` / ``location.updated``) asks it for a catalog
pass, coalesced like the inventory pokes. A new ``inventory.count.updated`` also hands its body to
the source's fast path (issue 14), which applies the counts it carries once the answer is on its way.

No business logic lives here. Answers (issue 3): 200 accepted, also for a repeat of an event
already stored; 401 missing or bad signature (nothing stored; counted and logged without the body);
400 a body that is not a JSON object with string ``event_id`` and ``type``; 413 a body over the
limit, refused from its ``Content-Length`` before anything is read, or as soon as a streamed body
passes the limit; 408 a body that does not arrive within ``read_timeout`` (a slow-loris client; the
connection is closed); 404 an unknown source; 405 (the router) any method but POST; 503 when the
inbox cannot commit (the sender retries). An event type syncd does not act on is stored, already
processed, and answered 200.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from syncd import metrics
from syncd.errors import SignatureError
from syncd.logs import HotLog
from syncd.store.inbox import UNKNOWN_SOURCE, Inbox, InboxEvent
from syncd.timeutil import now_ns
from syncd.web.app import error_response
from syncd.web.signatures import SIGNATURE_HEADER, SignatureVerifier

log = structlog.get_logger("syncd.webhooks")


# The line per accepted webhook: the same line as log.info(...), cheaper (see HotLog).
_canonical = HotLog(log)

WEBHOOK_ROUTE = "/webhooks/{source}"
APP_WEBHOOK_ROUTE = "/webhooks"
INVENTORY_COUNT_UPDATED = "inventory.count.updated"
OAUTH_REVOKED = "oauth.authorization.revoked"
# Event types that ask for a catalog pass (issue 12): ``catalog.version.updated`` names no object,
# only that the catalog changed; a location's name or status lives in the same mirror.
CATALOG_EVENTS = frozenset({"catalog.version.updated", "location.created", "location.updated"})
# The metric/log source label of an app-URL request rejected before it could be routed.
APP_LABEL = "_app"
UNKNOWN_MERCHANT = "unknown_merchant"
# Event types that poke the sync engine; any other type is stored (deduplicated) and ignored.
ACTED_ON = frozenset({INVENTORY_COUNT_UPDATED})
MAX_ID_LENGTH = 255  # event_id / type / merchant_id longer than this is not a Square event

# Rejection reasons: the `reason` label of syncd_webhooks_rejected_total and of `webhook_rejected`.
TOO_LARGE = "too_large"
MALFORMED = "malformed"
NOT_CONFIGURED = "not_configured"
UNAVAILABLE = "unavailable"
TOO_SLOW = "too_slow"


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One webhook source: its name (the path segment), how to verify it, and what to poke.

    ``verifier`` is None when the source has no signature key or notification URL configured: then
    every webhook for it is refused with 401, since none can be verified.
    """

    name: str
    verifier: SignatureVerifier | None
    poke: Callable[[], None]
    on_revoked: Callable[[], None] | None = None
    on_catalog: Callable[[], None] | None = None
    on_counts: Callable[[dict[str, Any]], None] | None = None  # the fast path: the decoded event


class WebhookRouting(Protocol):
    """Where webhooks go: a named source, a merchant's source, and every configured verifier."""

    def webhook_source(self, name: str) -> WebhookSource | None: ...

    def webhook_for_merchant(self, merchant_id: str) -> WebhookSource | None: ...

    def verifiers(self) -> Sequence[SignatureVerifier]: ...


@dataclass(frozen=True, slots=True)
class StaticRouting:
    """Routing over a fixed set of sources (tests, tools); merchants as the sources declare."""

    sources: Mapping[str, WebhookSource]
    merchants: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def webhook_source(self, name: str) -> WebhookSource | None:
        return self.sources.get(name)

    def webhook_for_merchant(self, merchant_id: str) -> WebhookSource | None:
        name = self.merchants.get(merchant_id)
        return None if name is None else self.sources.get(name)

    def verifiers(self) -> Sequence[SignatureVerifier]:
        return [s.verifier for s in self.sources.values() if s.verifier is not None]


class _RejectionLog:
    """Logs the first rejection per reason, then at most one per ``interval`` with the number held
    back, so a flood of bad requests cannot flood the log."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, source: str, reason: str, **fields: object) -> None:
        now = time.monotonic()
        if now < self._next.get(reason, 0.0):
            self._held[reason] = self._held.get(reason, 0) + 1
            return
        self._next[reason] = now + self._interval
        held = self._held.pop(reason, 0)
        log.warning("webhook_rejected", source=source, reason=reason, suppressed=held, **fields)


class WebhookIngress:
    """The handlers of ``POST /webhooks/{source}`` and ``POST /webhooks`` over the routing of the
    configured sources (live: SIGHUP adds and removes sources) and the inbox."""

    def __init__(
        self,
        sources: Mapping[str, WebhookSource] | WebhookRouting,
        inbox: Inbox,
        *,
        max_body_bytes: int,
        read_timeout: float | None = None,
        reject_log_interval: float = 1.0,
    ) -> None:
        self._routing: WebhookRouting = (
            StaticRouting(dict(sources)) if isinstance(sources, Mapping) else sources
        )
        self._inbox = inbox
        self._max = max_body_bytes
        self._read_timeout = read_timeout
        self._rejected = _RejectionLog(reject_log_interval)

    def _reject(
        self,
        request: web.Request,
        source: str,
        reason: str,
        status: int,
        message: str,
        size: int | None,
    ) -> web.Response:
        metrics.WEBHOOKS_REJECTED.labels(source, reason).inc()
        self._rejected(source, reason, status=status, bytes=size, remote=request.remote)
        code = {
            400: "bad_request",
            401: "unauthorized",
            408: "request_timeout",
            413: "payload_too_large",
            503: "unavailable",
        }[status]
        return error_response(status, code, message)

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /webhooks/{source}``: one named source, verified with its own keys."""
        t0 = time.perf_counter()
        received_ns = now_ns()
        source = self._routing.webhook_source(request.match_info["source"])
        if source is None:
            # Not counted per source: the path is caller-chosen (unbounded label values).
            return error_response(404, "not_found", "no webhook source by that name")
        name = source.name
        body = await self._receive(request, name)
        if isinstance(body, web.Response):
            return body
        if source.verifier is None:
            return self._reject(
                request,
                name,
                NOT_CONFIGURED,
                401,
                "webhooks are not configured for this source",
                len(body),
            )
        rejected = self._verify(request, name, [source.verifier], body)
        if rejected is not None:
            return rejected
        return await self._accept(request, source, name, body, received_ns, t0)

    async def handle_app(self, request: web.Request) -> web.Response:
        """``POST /webhooks``: the app's one URL; the event's merchant_id picks the source."""
        t0 = time.perf_counter()
        received_ns = now_ns()
        body = await self._receive(request, APP_LABEL)
        if isinstance(body, web.Response):
            return body
        data = _decode(body)  # once: the merchant routes it, then it is the event to store
        merchant_id = _peek_merchant(data)
        source = self._routing.webhook_for_merchant(merchant_id) if merchant_id else None
        if source is not None:
            verifiers = [source.verifier] if source.verifier is not None else []
        else:
            verifiers = list(self._routing.verifiers())
        label = source.name if source is not None else APP_LABEL
        if not verifiers:
            return self._reject(
                request, label, NOT_CONFIGURED, 401, "webhooks are not configured", len(body)
            )
        rejected = self._verify(request, label, verifiers, body)
        if rejected is not None:
            return rejected
        name = source.name if source is not None else UNKNOWN_SOURCE
        return await self._accept(request, source, name, body, received_ns, t0, data)

    async def _receive(self, request: web.Request, name: str) -> bytes | web.Response:
        """The body within the size and time limits, or the answer refusing it."""
        declared = request.content_length
        if declared is not None and declared > self._max:
            return self._reject(
                request, name, TOO_LARGE, 413, f"body larger than {self._max} bytes", declared
            )
        try:
            if request.content.is_eof():  # the whole body came with the head: nothing to wait for
                body = self._buffered(request)
            else:
                async with asyncio.timeout(self._read_timeout):
                    body = await self._read(request)
        except TimeoutError:
            # A slow-loris body: answer, and end the connection (the server reads and drops what
            # is left for at most read_timeout more; run_server).
            response = self._reject(
                request,
                name,
                TOO_SLOW,
                408,
                f"body not received within {self._read_timeout} s",
                None,
            )
            response.force_close()
            return response
        except (HttpProcessingError, web.RequestPayloadError, ClientPayloadError, ConnectionError):
            # Bad chunked or content encoding, or the sender went away mid-body.
            return self._reject(request, name, MALFORMED, 400, "body could not be read", None)
        if body is None:
            return self._reject(
                request, name, TOO_LARGE, 413, f"body larger than {self._max} bytes", None
            )
        return body

    def _verify(
        self,
        request: web.Request,
        name: str,
        verifiers: Sequence[SignatureVerifier],
        body: bytes,
    ) -> web.Response | None:
        """None when one of ``verifiers`` accepts the signature; else the 401 answer."""
        header = request.headers.get(SIGNATURE_HEADER)
        failure: SignatureError | None = None
        for verifier in verifiers:
            try:
                verifier.verify(header, body)
            except SignatureError as exc:
                failure = exc
            else:
                return None
        assert failure is not None
        reason = str(failure.context.get("reason", "bad_signature"))
        return self._reject(request, name, reason, 401, failure.message, len(body))

    async def _accept(
        self,
        request: web.Request,
        source: WebhookSource | None,
        name: str,
        body: bytes,
        received_ns: int,
        t0: float,
        data: object = None,
    ) -> web.Response:
        """Parse, store (durably, before the answer), poke, answer. ``source`` None: a verified
        event of a merchant no source knows, kept under ``_unknown``. ``data``: the body already
        decoded (``handle_app``), else it is decoded here."""
        parsed = _parse(_decode(body) if data is None else data, body, name, received_ns)
        if isinstance(parsed, str):
            return self._reject(request, name, MALFORMED, 400, parsed, len(body))
        event, decoded = parsed
        try:
            new = await self._inbox.add(event)
        except Exception as exc:  # a storage failure is the sender's cue to retry, never a 500
            log.error(
                "webhook_not_stored",
                source=name,
                event_id=event.event_id,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            return self._reject(
                request, name, UNAVAILABLE, 503, "cannot store the event now", len(body)
            )
        if source is None:
            outcome = UNKNOWN_MERCHANT if new else "duplicate"
        else:
            outcome = "new" if new else "duplicate"
            if new and event.actionable:
                if source.on_counts is not None:
                    source.on_counts(decoded)
                source.poke()
            if new and event.type == OAUTH_REVOKED and source.on_revoked is not None:
                source.on_revoked()
            if new and event.type in CATALOG_EVENTS and source.on_catalog is not None:
                source.on_catalog()
        metrics.child(metrics.WEBHOOKS_ACCEPTED, name, outcome).inc()  # looked up once
        (_canonical.warning if outcome == UNKNOWN_MERCHANT else _canonical.info)(
            "webhook",
            source=name,
            event_id=event.event_id,
            type=event.type,
            merchant_id=event.merchant_id,
            outcome=outcome,
            acted_on=source is not None
            and (event.actionable or event.type in CATALOG_EVENTS or event.type == OAUTH_REVOKED),
            bytes=len(body),
            duration_ms=round((time.perf_counter() - t0) * 1000, 2),
        )
        template = _ACCEPTED_NEW if new else _ACCEPTED_DUPLICATE
        return web.Response(body=template % orjson.dumps(event.event_id), content_type=_JSON)

    def _buffered(self, request: web.Request) -> bytes | None:
        """The whole body, all of it received already (no read to wait for), or None when it is
        over the limit."""
        body = request.content.read_nowait()
        return None if len(body) > self._max else body

    async def _read(self, request: web.Request) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (the rest is never buffered)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > self._max:
                return None
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _short_string(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


# The 200 answer's body, ``{"status": "accepted", "event_id": ..., "duplicate": ...}``, with the
# event id (JSON-encoded) put in.
_ACCEPTED_NEW = b'{"status":"accepted","event_id":%s,"duplicate":false}'
_ACCEPTED_DUPLICATE = b'{"status":"accepted","event_id":%s,"duplicate":true}'
_JSON = "application/json"

_NOT_JSON = object()  # what _decode gives for a body that is not JSON


def _decode(body: bytes) -> object:
    """The body as JSON, or ``_NOT_JSON``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _peek_merchant(data: object) -> str | None:
    """The ``merchant_id`` of a decoded body that may be anything (not verified yet)."""
    return _short_string(data.get("merchant_id")) if isinstance(data, dict) else None


def _parse(
    data: object, body: bytes, source: str, received_ns: int
) -> tuple[InboxEvent, dict[str, Any]] | str:
    """The event to store with its decoded body, or the reason (for the 400 answer) why the
    body is not one."""
    if data is _NOT_JSON:
        return "body is not JSON"
    if not isinstance(data, dict):
        return "body is not a JSON object"
    event_id = _short_string(data.get("event_id"))
    if event_id is None:
        return "event_id missing or not a string"
    event_type = _short_string(data.get("type"))
    if event_type is None:
        return "type missing or not a string"
    created_at = data.get("created_at")
    event = InboxEvent(
        event_id=event_id,
        source=source,
        type=event_type,
        merchant_id=_short_string(data.get("merchant_id")),
        created_at=created_at if isinstance(created_at, str) and len(created_at) <= 64 else None,
        received_ns=received_ns,
        body=body,
        actionable=event_type in ACTED_ON,
    )
    return event, data


def add_webhook_routes(app: web.Application, ingress: WebhookIngress) -> None:
    """Register ``POST /webhooks`` and ``POST /webhooks/{source}``; the router answers 405 for
    other methods."""
    app.router.add_post(APP_WEBHOOK_ROUTE, ingress.handle_app)
    app.router.add_post(WEBHOOK_ROUTE, ingress.handle)
