"""The app's one webhook URL (``POST /webhooks``) in front of several sources: an event goes to the
source of its ``merchant_id`` and pokes that source only; an event of a merchant no source knows
is stored under ``_unknown``, answered 200 and counted, and handed to the source that later
claims the merchant. Real daemon, a real two-seller marketplace over loopback, real SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from syncd import metrics
from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.daemon_sources import SourceRunner
from syncd.simulator import Marketplace, SimulatorConfig, serve_marketplace
from syncd.store.inbox import UNKNOWN_SOURCE
from tests.conftest import running_daemon
from tests.helpers import assert_log_invariants, changes, metric_sum, mirror
from tests.webhook_kit import KEY, event, inbox_rows, signed

APP_URL = "https://syncd.example.com/webhooks"


def app_settings(
    make_settings: Callable[..., Settings], market: Marketplace, names: list[str]
) -> Settings:
    """One OAuth source per name, on the marketplace's sellers in order; the app's key and URL
    in ``source_defaults``."""
    sellers = list(market.sellers)
    return make_settings(
        sources={
            name: {"oauth": {"refresh_token": market.grant(sellers[i])}}
            for i, name in enumerate(names)
        },
        source_defaults={
            "oauth": {"client_id": market.oauth.client_id, "client_secret": "sim-secret"},
            "webhook_signature_keys": [KEY],
            "notification_url": APP_URL,
            "poll_interval": 300,
        },
    )


async def synced(daemon: Daemon, name: str) -> SourceRunner:
    """The source's runner once its first pass has succeeded."""
    async with asyncio.timeout(10):
        while (runner := daemon.runner(name)) is None or runner.trigger.last_success is None:
            await asyncio.sleep(0.01)
    return runner


async def post(daemon: Daemon, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    assert daemon.public_url is not None
    async with (
        aiohttp.ClientSession() as client,
        client.post(daemon.public_url + "/webhooks", data=body, headers=headers) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def accepted(source: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "syncd_webhooks_accepted_total", {"source": source, "outcome": outcome}
    )
    return value or 0.0


def two_sellers() -> list[SimulatorConfig]:
    return [SimulatorConfig(locations=1, items=5, seed=seed) for seed in (0, 1)]


async def test_an_event_reaches_the_source_of_its_merchant_only(
    make_settings: Callable[..., Settings],
) -> None:
    """Seller B's event at the app URL is stored as B's and starts a pass of B; A's trigger does
    not move. A wrong signature is 401 and stores nothing."""
    async with serve_marketplace(two_sellers()) as (market, url):
        settings = app_settings(make_settings, market, ["a", "b"])
        merchant_b = list(market.sellers)[1]
        async with running_daemon(settings, url) as daemon:
            a, b = await synced(daemon, "a"), await synced(daemon, "b")
            a_passes, b_passes = a.trigger.passes, b.trigger.passes
            body = event("EV-B", merchant_id=merchant_b)
            assert (await post(daemon, body, signed(body, key="wrong", url=APP_URL)))[0] == 401
            assert inbox_rows(settings.database) == []
            status, answer = await post(daemon, body, signed(body, url=APP_URL))
            assert (status, answer["event_id"]) == (200, "EV-B")
            async with asyncio.timeout(10):
                while inbox_rows(settings.database)[0]["processed_at"] is None:
                    await asyncio.sleep(0.01)
            assert b.trigger.passes > b_passes
            assert a.trigger.passes == a_passes
    [row] = inbox_rows(settings.database)
    assert (row["source"], row["merchant_id"]) == ("b", merchant_b)


async def test_an_events_counts_reach_its_merchants_mirror_only(
    make_settings: Callable[..., Settings],
) -> None:
    """The fast path routes by merchant too: seller B's counts at the app URL land under source
    b at once (while B's batch-retrieve fails), and source a's mirror does not move."""
    async with serve_marketplace(two_sellers()) as (market, url):
        settings = app_settings(make_settings, market, ["a", "b"])
        merchant_b, seller_b = list(market.sellers.items())[1]
        async with running_daemon(settings, url) as daemon:
            await synced(daemon, "a")
            await synced(daemon, "b")
            before_a = mirror(settings.database, "a")
            seller_b.fail_for(503, 60)
            [changed] = seller_b.mutate(1)
            body = event("EV-B-COUNTS", merchant_id=merchant_b, counts=[changed])
            assert (await post(daemon, body, signed(body, url=APP_URL)))[0] == 200
            key = (changed["catalog_object_id"], changed["location_id"], changed["state"])
            async with asyncio.timeout(5):
                while mirror(settings.database, "b")[key]["quantity"] != changed["quantity"]:
                    await asyncio.sleep(0.01)
            assert mirror(settings.database, "a") == before_a
            seller_b.fail_for(503, 0)
    assert_log_invariants(settings.database, "b")


async def test_metrics_say_which_source(make_settings: Callable[..., Settings]) -> None:
    """Upstream requests, pokes and change-log entries are labelled with the source they belong
    to (one daemon, two sellers)."""
    async with serve_marketplace(two_sellers()) as (market, url):
        settings = app_settings(make_settings, market, ["a", "b"])
        op = "square.batch_retrieve_counts"
        before = {
            name: (
                metric_sum("syncd_upstream_requests_total", source=name, op=op, status="200"),
                metric_sum("syncd_changes_written_total", source=name, kind="count.updated"),
                metric_sum("syncd_sync_pokes_total", source=name),
            )
            for name in "ab"
        }
        merchant_b = list(market.sellers)[1]
        async with running_daemon(settings, url) as daemon:
            await synced(daemon, "a")
            b = await synced(daemon, "b")
            passes = b.trigger.passes
            body = event("EV-POKE-B", merchant_id=merchant_b)
            assert (await post(daemon, body, signed(body, url=APP_URL)))[0] == 200
            async with asyncio.timeout(10):
                while b.trigger.passes == passes:
                    await asyncio.sleep(0.01)
    entries = changes(settings.database)
    for name in "ab":
        requests, written, _ = before[name]
        assert (
            metric_sum("syncd_upstream_requests_total", source=name, op=op, status="200") > requests
        )
        logged = sum(1 for e in entries if e["source"] == name and e["kind"] == "count.updated")
        assert logged > 0
        assert (
            metric_sum("syncd_changes_written_total", source=name, kind="count.updated") - written
            == logged
        )
    assert metric_sum("syncd_sync_pokes_total", source="b") - before["b"][2] >= 1
    assert metric_sum("syncd_sync_pokes_total", source="a") == before["a"][2]


async def test_unknown_merchant_is_kept_then_adopted_by_the_source_added_for_it(
    make_settings: Callable[..., Settings],
) -> None:
    """With only seller A configured, seller B's event is verified, answered 200, stored under
    ``_unknown`` and counted, and starts no pass. SIGHUP adds source b for seller B: b learns
    its merchant from the token endpoint, takes the stored event and its pass covers it."""
    async with serve_marketplace(two_sellers()) as (market, url):
        later = app_settings(make_settings, market, ["a", "b"])
        first = later.model_copy(update={"sources": {"a": later.sources["a"]}})
        merchant_b = list(market.sellers)[1]
        async with running_daemon(first, url, reload=lambda: later) as daemon:
            a = await synced(daemon, "a")
            a_passes = a.trigger.passes
            before = accepted(UNKNOWN_SOURCE, "unknown_merchant")
            body = event("EV-EARLY", merchant_id=merchant_b)
            status, answer = await post(daemon, body, signed(body, url=APP_URL))
            assert (status, answer["duplicate"]) == (200, False)
            assert accepted(UNKNOWN_SOURCE, "unknown_merchant") == before + 1
            [row] = inbox_rows(first.database)
            assert (row["source"], row["processed_at"]) == (UNKNOWN_SOURCE, None)
            status, answer = await post(daemon, body, signed(body, url=APP_URL))
            assert (status, answer["duplicate"]) == (200, True)
            daemon.handle_reload()
            await synced(daemon, "b")
            async with asyncio.timeout(10):
                while (row := inbox_rows(first.database)[0])["processed_at"] is None:
                    await asyncio.sleep(0.01)
            assert row["source"] == "b"
            assert a.trigger.passes == a_passes
