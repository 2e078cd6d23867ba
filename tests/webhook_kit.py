"""Shared pieces of the webhook tests: keys, signed requests, inbox reads, a daemon with webhooks
on."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.simulator.webhooks import SIGNATURE_HEADER, sign
from tests.conftest import running_daemon

KEY = "new-signature-key-0123456789"
OLD_KEY = "old-signature-key-9876543210"
# What the operator registered upstream: the public URL of the reverse proxy, not the daemon's own.
NOTIFICATION_URL = "https://syncd.example.com/webhooks/square"


def webhook_settings(make_settings: Callable[..., Settings], **sections: Any) -> Settings:
    """Fast test settings with two signature keys (rotation) and the proxy's notification URL."""
    square = {
        "webhook_signature_keys": [KEY, OLD_KEY],
        "notification_url": NOTIFICATION_URL,
        "poll_interval": 300,
        **sections.pop("square", {}),
    }
    return make_settings(square=square, **sections)


def event(
    event_id: str | None = None,
    *,
    type: str = "inventory.count.updated",
    counts: list[dict[str, str]] | None = None,
    **extra: Any,
) -> bytes:
    """A Square ``inventory.count.updated``-shaped event body."""
    body: dict[str, Any] = {
        "merchant_id": "MERCHANT1",
        "type": type,
        "event_id": event_id or str(uuid.uuid4()),
        "created_at": "2026-01-01T00:00:00.123456789Z",
        "data": {
            "type": "inventory_counts",
            "id": str(uuid.uuid4()),
            "object": {"inventory_counts": counts or []},
        },
    }
    body.update(extra)
    return orjson.dumps(body)


def signed(body: bytes, key: str = KEY, url: str = NOTIFICATION_URL) -> dict[str, str]:
    """Headers Square would send with ``body`` (signed by the simulator's own implementation)."""
    return {SIGNATURE_HEADER: sign(key, url, body), "Content-Type": "application/json"}


def inbox_rows(db: Path) -> list[dict[str, Any]]:
    """Every inbox row, oldest first, read like another tool would (read-only connection)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        cur = conn.execute(
            "SELECT event_id, source, type, merchant_id, created_at, received_at,"
            " received_ns, body, processed_at FROM webhook_events"
            " ORDER BY received_ns"
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


@dataclass
class Rig:
    """A simulator upstream, a daemon with webhooks configured, and an HTTP client."""

    sim: Simulator
    daemon: Daemon
    client: aiohttp.ClientSession
    settings: Settings

    @property
    def webhook_url(self) -> str:
        assert self.daemon.public_url is not None
        return f"{self.daemon.public_url}/webhooks/square"

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = "/webhooks/square"
    ) -> tuple[int, dict[str, Any]]:
        """POST and return (status, decoded JSON body)."""
        assert self.daemon.public_url is not None
        async with self.client.post(
            self.daemon.public_url + path,
            data=body,
            headers=signed(body) if headers is None else headers,
        ) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def first_pass(self) -> None:
        """Wait until the daemon's first pass has succeeded."""
        trigger = self.daemon.trigger
        assert trigger is not None
        async with asyncio.timeout(10):
            while trigger.last_success is None:
                await asyncio.sleep(0.01)

    async def all_processed(self) -> list[dict[str, Any]]:
        """Wait until every inbox row is processed; return the rows."""
        async with asyncio.timeout(10):
            while True:
                rows = inbox_rows(self.settings.database)
                if all(r["processed_at"] is not None for r in rows):
                    return rows
                await asyncio.sleep(0.01)


@asynccontextmanager
async def rig(settings: Settings, sim_config: SimulatorConfig | None = None) -> AsyncIterator[Rig]:
    """Simulator + daemon (webhooks configured as in ``settings``) + client, all torn down after."""
    config = sim_config or SimulatorConfig(locations=2, items=20)
    async with (
        serve(config) as (sim, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as client,
    ):
        yield Rig(sim, daemon, client, settings)
