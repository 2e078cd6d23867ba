"""``syncd_catalog_unknown_variation_counts`` on the admin listener's /metrics: an in-process
daemon with the catalog on, against the simulator, scraped over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import Settings
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon

METRIC = "syncd_catalog_unknown_variation_counts"


async def unknown_gauge(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The gauge's value by source, as one scrape shows it."""
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        s.labels["source"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == METRIC
    }


async def scrape_until(
    http: aiohttp.ClientSession, base: str, expected: dict[str, float]
) -> dict[str, float]:
    """Scrape until the gauge reads ``expected`` (bounded: 10 s), return the last scrape."""
    got: dict[str, float] = {}
    async with asyncio.timeout(10):
        while got != expected:
            got = await unknown_gauge(http, base)
            if got != expected:
                await asyncio.sleep(0.02)
    return got


async def test_the_gauge_counts_counts_no_catalog_variation_joins(
    make_settings: Callable[..., Settings],
) -> None:
    """While the catalog is refused (403) every count is of an unknown variation: after the first
    counts pass the gauge equals the number of counts; once the catalog answers, its next pass
    reads the variations and the gauge drops to 0."""
    settings = make_settings(
        square={
            "catalog_sync": True,
            "poll_interval": 300,
            "retry_backoff_initial": 0.1,
            "retry_backoff_max": 0.2,
        }
    )
    async with serve(SimulatorConfig(locations=2, items=15)) as (sim, url):
        sim.fail_catalog_next(403, times=10_000)
        async with running_daemon(settings, url) as daemon, aiohttp.ClientSession() as http:
            assert daemon.admin_url is not None
            total = len(sim.snapshot())
            assert total > 0
            await scrape_until(http, daemon.admin_url, {"square": float(total)})
            sim.catalog_faults.clear()
            await scrape_until(http, daemon.admin_url, {"square": 0.0})
