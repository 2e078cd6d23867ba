"""The simulator's webhook sender (syncd.simulator.webhooks) against a receiver on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from syncd.simulator import Simulator, SimulatorConfig, WebhookTarget
from syncd.simulator.webhooks import SIGNATURE_HEADER, sign
from syncd.web.app import Listener, run_server

# The InventoryCountUpdatedEvent example of Square's OpenAPI document
# (components.schemas.InventoryCountUpdatedEvent.example in the spec syncd is built against).
SPEC_EXAMPLE = {
    "created_at": "2019-10-29T18:38:45.455006797Z",
    "data": {
        "id": "84e4ac73-d605-4dbd-a9e5-ffff794ddb9d",
        "object": {
            "inventory_counts": [
                {
                    "calculated_at": "2019-10-29T18:38:45.10296Z",
                    "catalog_object_id": "FGQ5JJWT2PYTHF35CKZ2DSKP",
                    "catalog_object_type": "ITEM_VARIATION",
                    "location_id": "YYQR03DGCTXA4",
                    "quantity": "10",
                    "state": "IN_STOCK",
                }
            ]
        },
        "type": "inventory_counts",
    },
    "event_id": "df5f3813-a913-45a1-94e9-fdc3f7d5e3b6",
    "merchant_id": "6SSW7HV8K2ST5",
    "type": "inventory.count.updated",
}


@asynccontextmanager
async def receiver(statuses: list[int]) -> AsyncIterator[tuple[str, list[tuple[bytes, str]]]]:
    """A webhook receiver answering the scripted statuses in turn (then 200); yields its URL and
    what it got (body, signature header)."""
    got: list[tuple[bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    async with run_server(app, Listener(host="127.0.0.1")) as url:
        yield f"{url}/hook", got


async def test_one_signed_event_per_changed_count() -> None:
    """Each changed count becomes one inventory.count.updated event in Square's shape, signed over
    the configured notification URL (not the URL it is posted to)."""
    async with receiver([]) as (url, got):
        sim = Simulator(SimulatorConfig(locations=1, items=10))
        sim.webhooks.target = WebhookTarget(url, "k", notification_url="https://proxy/hook")
        async with sim.webhooks.running():
            changed = [*sim.mutate(3), sim.set_count("OBJ1", sim.location_ids[0], "IN_STOCK", "7")]
            async with asyncio.timeout(5):
                await sim.webhooks.drain()
    assert sim.webhooks.sent == 4
    assert len(got) == 4
    by_count = {}
    for body, signature in got:
        assert signature == sign("k", "https://proxy/hook", body)
        event = orjson.loads(body)
        assert event["type"] == "inventory.count.updated"
        assert event["data"]["type"] == "inventory_counts"
        [count] = event["data"]["object"]["inventory_counts"]
        by_count[count["catalog_object_id"], count["location_id"]] = count
    assert sorted(by_count.values(), key=str) == sorted(changed, key=str)


async def test_event_shape_matches_the_spec_example() -> None:
    """The event has the same keys, at every level, as the InventoryCountUpdatedEvent example in
    the Square OpenAPI document."""
    example: dict[str, Any] = SPEC_EXAMPLE
    async with receiver([]) as (url, got):
        sim = Simulator(SimulatorConfig(locations=1, items=3))
        sim.webhooks.target = WebhookTarget(url, "k")
        async with sim.webhooks.running():
            sim.mutate(1)
            async with asyncio.timeout(5):
                await sim.webhooks.drain()
    event = orjson.loads(got[0][0])
    assert event.keys() == example.keys()
    assert event["data"].keys() == example["data"].keys()
    count = event["data"]["object"]["inventory_counts"][0]
    assert count.keys() == example["data"]["object"]["inventory_counts"][0].keys()


async def test_retries_until_2xx_then_gives_up() -> None:
    """Like Square, a delivery answered non-2xx is retried with backoff; after max_attempts it is
    given up and counted as failed."""
    async with receiver([500, 503, 200, 500, 500, 500]) as (url, got):
        sim = Simulator(SimulatorConfig(locations=1, items=3))
        sim.webhooks.target = WebhookTarget(
            url, "k", concurrency=1, max_attempts=3, retry_delay=0.001
        )
        async with sim.webhooks.running():
            sim.mutate(1)
            async with asyncio.timeout(5):
                await sim.webhooks.drain()
            assert sim.webhooks.sent == 1
            sim.mutate(1)
            async with asyncio.timeout(5):
                await sim.webhooks.drain()
    assert sim.webhooks.failed == 1
    assert len(got) == 6
    assert got[0][0] == got[2][0]  # the same event, redelivered


async def test_no_target_no_events() -> None:
    """Without a target (the default), or while not running, changes send nothing."""
    sim = Simulator(SimulatorConfig(locations=1, items=3))
    async with sim.webhooks.running():
        sim.mutate(2)
        await sim.webhooks.drain()
    sim.webhooks.target = WebhookTarget("http://127.0.0.1:9/hook", "k")
    sim.mutate(2)  # not running
    assert sim.webhooks.stats()["queued"] == 0
    assert sim.webhooks.event_ids == []
