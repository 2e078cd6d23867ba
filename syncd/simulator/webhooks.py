"""The simulator's webhook sender: signed ``inventory.count.updated`` events after each change.

A catalog change (``Simulator.rename_catalog`` and the like) sends one ``catalog.version.updated``
instead: like Square's, it names no object, only the catalog's new ``updated_at``; the receiver
reads what changed with SearchCatalogObjects ``begin_time``.

Plays Square's side of the webhook contract: every count the simulator changes becomes one event in
Square's JSON shape (``InventoryCountUpdatedEvent``), signed with the subscription's signature key
over the notification URL + raw body (header ``x-square-hmacsha256-signature``) and POSTed to the
target URL. Like Square, a delivery that is not answered 2xx is retried with backoff.

The signing is written here independently of ``syncd.web.signatures`` on purpose: the simulator
plays the other side, so the tests cross-check two implementations.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from syncd.timeutil import format_ns, now_ns

log = structlog.get_logger("syncd.simulator")

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
EVENT_TYPE = "inventory.count.updated"
REVOKED_EVENT_TYPE = "oauth.authorization.revoked"
CATALOG_EVENT_TYPE = "catalog.version.updated"
REVOKER_TYPES = frozenset({"APPLICATION", "MERCHANT", "SQUARE"})

Row = dict[str, str]  # one InventoryCount as API JSON


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where and how to deliver: the URL to POST to, the signature key, and the notification URL
    that is signed (the URL registered upstream; defaults to ``url``, differs behind a proxy)."""

    url: str
    signature_key: str
    notification_url: str | None = None
    merchant_id: str = "SIMMERCHANT01"
    concurrency: int = 8  # deliveries in flight at once
    max_attempts: int = 5  # a delivery not answered 2xx is tried this often in all
    retry_delay: float = 0.05  # seconds before the first retry; doubles per retry
    timeout: float = 10.0  # seconds one delivery attempt may take

    @property
    def signed_url(self) -> str:
        return self.notification_url or self.url


def sign(signature_key: str, notification_url: str, body: bytes) -> str:
    """base64(HMAC-SHA256(key, notification URL + raw body)), as Square computes it."""
    mac = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def event_body(
    count: Row, *, merchant_id: str, event_id: str | None = None, created_at: str | None = None
) -> bytes:
    """One ``inventory.count.updated`` event for one count, in Square's JSON shape."""
    return orjson.dumps(
        {
            "merchant_id": merchant_id,
            "type": EVENT_TYPE,
            "event_id": event_id or str(uuid.uuid4()),
            "created_at": created_at or format_ns(now_ns()),
            "data": {
                "type": "inventory_counts",
                "id": str(uuid.uuid4()),
                "object": {"inventory_counts": [count]},
            },
        }
    )


def revocation_body(
    *, merchant_id: str, revoker_type: str, revoked_at: str, event_id: str | None = None
) -> bytes:
    """One ``oauth.authorization.revoked`` event: the seller's grant to the app is gone."""
    return orjson.dumps(
        {
            "merchant_id": merchant_id,
            "type": REVOKED_EVENT_TYPE,
            "event_id": event_id or str(uuid.uuid4()),
            "created_at": format_ns(now_ns()),
            "data": {
                "type": "revocation",
                "id": str(uuid.uuid4()),
                "object": {"revocation": {"revoked_at": revoked_at, "revoker_type": revoker_type}},
            },
        }
    )


def catalog_version_body(
    *, merchant_id: str, updated_at: str, event_id: str | None = None
) -> bytes:
    """One ``catalog.version.updated`` event: the catalog changed at ``updated_at``."""
    return orjson.dumps(
        {
            "merchant_id": merchant_id,
            "type": CATALOG_EVENT_TYPE,
            "event_id": event_id or str(uuid.uuid4()),
            "created_at": format_ns(now_ns()),
            "data": {
                "type": "catalog_version",
                "id": "",
                "object": {"catalog_version": {"updated_at": updated_at}},
            },
        }
    )


class WebhookSender:
    """Queues one event per changed count and delivers them while ``running()``.

    ``target`` may be set or replaced at any time (e.g. once the receiver's port is known); events
    are signed when sent, with the target current then. While no target is set, or the sender is not
    running, changes produce no events.
    """

    def __init__(self, target: WebhookTarget | None = None) -> None:
        self.target = target
        self._queue: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._running = False
        self.sent = 0  # delivered (answered 2xx)
        self.failed = 0  # given up after max_attempts
        self.attempts = 0
        self.statuses: Counter[int] = Counter()
        self.event_ids: list[str] = []  # of every event queued, in order (tests match them)

    def notify(self, counts: list[Row], *, merchant_id: str | None = None) -> None:
        """Queue one event per changed count (called by the Simulator after each change).

        ``merchant_id`` is the seller the counts belong to; None means the target's (one seller).
        """
        target = self.target
        if target is None or not self._running or not counts:
            return
        merchant = merchant_id or target.merchant_id
        for count in counts:
            event_id = str(uuid.uuid4())
            self._enqueue(event_id, event_body(count, merchant_id=merchant, event_id=event_id))

    def notify_catalog(self, updated_at: str, *, merchant_id: str | None = None) -> bool:
        """Queue one ``catalog.version.updated`` event (called after each catalog change);
        False when nothing is sent (no target or not running)."""
        target = self.target
        if target is None or not self._running:
            return False
        event_id = str(uuid.uuid4())
        body = catalog_version_body(
            merchant_id=merchant_id or target.merchant_id, updated_at=updated_at, event_id=event_id
        )
        self._enqueue(event_id, body)
        return True

    def notify_revoked(self, merchant_id: str, *, revoker_type: str, revoked_at: str) -> bool:
        """Queue one ``oauth.authorization.revoked`` event; False when nothing is sent (no target
        or not running)."""
        if self.target is None or not self._running:
            return False
        event_id = str(uuid.uuid4())
        body = revocation_body(
            merchant_id=merchant_id,
            revoker_type=revoker_type,
            revoked_at=revoked_at,
            event_id=event_id,
        )
        self._enqueue(event_id, body)
        return True

    def _enqueue(self, event_id: str, body: bytes) -> None:
        self.event_ids.append(event_id)
        self._queue.append(body)
        self._idle.clear()
        self._wakeup.set()

    async def drain(self) -> None:
        """Wait until every queued event was delivered or given up (bound it with a timeout)."""
        await self._idle.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "target": None if self.target is None else self.target.url,
            "sent": self.sent,
            "failed": self.failed,
            "attempts": self.attempts,
            "queued": len(self._queue),
            "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
        }

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver queued events for the duration of the block (owns its session and tasks)."""
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(self._deliver_forever(session), name="simulator-webhooks")
            self._running = True
            try:
                yield
            finally:
                self._running = False
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._queue.clear()
                self._idle.set()

    async def _deliver_forever(self, session: aiohttp.ClientSession) -> None:
        sending: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and self.target is not None:
                    target = self.target
                    if self._in_flight >= target.concurrency:
                        break  # a finishing delivery sets _wakeup again
                    body = self._queue.popleft()
                    self._in_flight += 1
                    task = asyncio.create_task(self._deliver(session, target, body))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
        finally:
            for task in list(sending):
                task.cancel()
            for task in list(sending):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _deliver(
        self, session: aiohttp.ClientSession, target: WebhookTarget, body: bytes
    ) -> None:
        try:
            await self._attempts(session, target, body)
        finally:
            self._in_flight -= 1
            if not self._queue and self._in_flight == 0:
                self._idle.set()
            self._wakeup.set()

    async def _attempts(
        self, session: aiohttp.ClientSession, target: WebhookTarget, body: bytes
    ) -> None:
        """Deliver one event, retrying with backoff until 2xx or ``max_attempts``."""
        headers = {
            SIGNATURE_HEADER: sign(target.signature_key, target.signed_url, body),
            "Content-Type": "application/json",
        }
        delay = target.retry_delay
        status = 0
        for attempt in range(1, target.max_attempts + 1):
            self.attempts += 1
            status = await self._post(session, target, body, headers)
            self.statuses[status] += 1
            if 200 <= status < 300:
                self.sent += 1
                return
            if attempt < target.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.warning(
            "simulator_webhook_failed",
            url=target.url,
            attempts=target.max_attempts,
            last_status=status,
        )

    @staticmethod
    async def _post(
        session: aiohttp.ClientSession, target: WebhookTarget, body: bytes, headers: dict[str, str]
    ) -> int:
        """One attempt; 0 stands for a network error or a timeout."""
        try:
            async with session.post(
                target.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=target.timeout),
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 0
