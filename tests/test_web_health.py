"""/healthz and /readyz on a real daemon: liveness always, readiness after the first good pass and
while passes stay fresh."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from syncd.config import Settings
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with client.get(url) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_ready_only_after_the_first_pass(make_settings: Callable[..., Settings]) -> None:
    """While the first pass is still running (a slow upstream), /healthz is 200 and /readyz is 503
    with reason first_pass_pending; once the pass completed, /readyz is 200."""
    settings = make_settings()
    config = SimulatorConfig(locations=1, items=5, page_delay=0.5)
    async with (
        serve(config) as (_, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as client,
    ):
        base = daemon.public_url
        assert base is not None
        assert daemon.trigger is not None
        assert await get(client, base + "/healthz") == (200, {"status": "ok"})
        status, body = await get(client, base + "/readyz")
        assert status == 503
        assert body["reason"] == "first_pass_pending"
        async with asyncio.timeout(10):
            while daemon.trigger.last_success is None:
                await asyncio.sleep(0.01)
        status, body = await get(client, base + "/readyz")
        assert status == 200
        assert body["reason"] == "ready"
        assert body["last_success_age_s"] >= 0


async def test_not_ready_while_passes_fail(make_settings: Callable[..., Settings]) -> None:
    """When the first pass fails (the upstream answers 401), /readyz stays 503 and carries the
    error so an operator sees why."""
    settings = make_settings(square={"max_retries": 0})
    async with serve(SimulatorConfig(locations=1, items=5)) as (sim, url):
        sim.fail_next(401, times=1000)
        async with running_daemon(settings, url) as daemon, aiohttp.ClientSession() as client:
            assert daemon.public_url is not None
            assert daemon.trigger is not None
            async with asyncio.timeout(10):
                while daemon.trigger.last_error is None:
                    await asyncio.sleep(0.01)
            status, body = await get(client, daemon.public_url + "/readyz")
    assert status == 503
    assert body["reason"] == "first_pass_pending"
    assert "401" in body["last_error"] or "UNAUTHORIZED" in body["last_error"]


async def test_stale_after_max_staleness(make_settings: Callable[..., Settings]) -> None:
    """With no pass for longer than http.ready_max_staleness, /readyz turns 503 (reason stale)
    while /healthz stays 200."""
    settings = make_settings(http={"ready_max_staleness": 0.3}, square={"poll_interval": 300})
    async with (
        serve(SimulatorConfig(locations=1, items=5)) as (_, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as client,
    ):
        base = daemon.public_url
        assert base is not None
        assert daemon.trigger is not None
        async with asyncio.timeout(10):
            while daemon.trigger.last_success is None:
                await asyncio.sleep(0.01)
        assert (await get(client, base + "/readyz"))[0] == 200
        await asyncio.sleep(max(0.0, daemon.trigger.last_success + 0.35 - time.monotonic()))
        status, body = await get(client, base + "/readyz")
        assert status == 503
        assert body["reason"] == "stale"
        assert body["max_staleness_s"] == 0.3
        assert (await get(client, base + "/healthz"))[0] == 200


async def test_one_failing_source_is_named_but_does_not_fail_readiness(
    make_settings: Callable[..., Settings],
) -> None:
    """Two sources, one whose upstream refuses connections: /readyz stays 200 (the app's webhook
    URL stays in the load balancer) and names the failing source; ``?strict=1`` and
    ``?source=down`` are 503 with its reason and error; ``?source=up`` is 200; an unknown source
    is 404."""
    async with serve(SimulatorConfig(locations=1, items=5)) as (_, url):
        settings = make_settings(
            sources={"up": {"base_url": url}, "down": {"base_url": "http://127.0.0.1:9"}},
            source_defaults={"max_retries": 0, "access_token": "t"},
        )
        async with running_daemon(settings, None) as daemon, aiohttp.ClientSession() as client:
            base = daemon.public_url
            assert base is not None
            async with asyncio.timeout(10):
                while (
                    (up := daemon.runner("up")) is None
                    or up.trigger.last_success is None
                    or (down := daemon.runner("down")) is None
                    or down.trigger.last_error is None
                ):
                    await asyncio.sleep(0.01)
            status, body = await get(client, base + "/readyz")
            assert (status, body["status"], body["not_ready"]) == (200, "ready", ["down"])
            assert body["sources"]["up"]["reason"] == "ready"
            assert body["sources"]["down"]["reason"] == "first_pass_pending"
            assert body["sources"]["down"]["last_error"]
            status, body = await get(client, base + "/readyz?strict=1")
            assert (status, body["reason"]) == (503, "first_pass_pending")
            status, body = await get(client, base + "/readyz?source=down")
            assert (status, body["reason"]) == (503, "first_pass_pending")
            assert (await get(client, base + "/readyz?source=up"))[0] == 200
            assert (await get(client, base + "/readyz?source=nope"))[0] == 404
