"""syncd.upstream.locations.list_locations against the simulator on 127.0.0.1, and against a
scripted server for malformed answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from syncd.errors import UpstreamDataError, UpstreamError
from syncd.simulator import Marketplace, OAuthConfig, SimulatorConfig, serve_marketplace
from syncd.upstream.http import STATUS_HINTS, RetryPolicy
from syncd.upstream.locations import Location, list_locations
from syncd.web.app import Listener, run_server

POLICY = RetryPolicy(max_retries=1, backoff_initial=0.001, backoff_max=0.001)
VERSION = "2025-01-23"


async def no_sleep(_: float) -> None:
    return None


@asynccontextmanager
async def served(
    configs: list[SimulatorConfig], oauth: OAuthConfig | None = None
) -> AsyncIterator[tuple[Marketplace, str, aiohttp.ClientSession]]:
    async with serve_marketplace(configs, oauth) as (market, url), aiohttp.ClientSession() as s:
        yield market, url, s


async def fetch(session: aiohttp.ClientSession, url: str, token: str | None) -> list[Location]:
    return await list_locations(
        session,
        base_url=url,
        api_version=VERSION,
        access_token=token,
        policy=POLICY,
        sleep=no_sleep,
    )


def access_token(market: Marketplace, merchant_id: str) -> str:
    return str(market.refresh(market.grant(merchant_id))["access_token"])


async def test_lists_the_tokens_sellers_locations_active_and_inactive() -> None:
    """Each seller's token lists its own locations, inactive ones included, with their fields."""
    configs = [SimulatorConfig(items=1, locations=3, seed=seed) for seed in (1, 2)]
    async with served(configs, OAuthConfig()) as (market, url, session):
        a, b = market.sellers.values()
        a.set_location_status(a.location_ids[1], "INACTIVE")
        added = b.add_location("Warehouse")
        got_a = await fetch(session, url, access_token(market, a.merchant_id))
        got_b = await fetch(session, url, access_token(market, b.merchant_id))
    assert [loc.id for loc in got_a] == a.location_ids
    assert [loc.status for loc in got_a] == ["ACTIVE", "INACTIVE", "ACTIVE"]
    assert [loc.active for loc in got_a] == [True, False, True]
    assert {loc.merchant_id for loc in got_a} == {a.merchant_id}
    assert got_a[0] == Location(
        a.location_ids[0], "Store 1", "ACTIVE", a.merchant_id, "America/Los_Angeles"
    )
    assert [loc.id for loc in got_b] == b.location_ids
    assert (got_b[-1].id, got_b[-1].name) == (added["id"], "Warehouse")


async def test_a_lone_seller_without_auth_needs_no_token() -> None:
    """Against a lone seller with no static token and no grants, no token is needed."""
    async with served([SimulatorConfig(items=1, locations=2)]) as (market, url, session):
        got = await fetch(session, url, None)
    assert [loc.id for loc in got] == market.first.location_ids


async def test_expired_or_missing_token_is_a_401_upstream_error_with_the_hint() -> None:
    """An expired token and a missing one raise UpstreamError 401 (not retried) with the access
    token hint; the vendor code says which."""
    configs = [SimulatorConfig(items=1, seed=seed) for seed in (1, 2)]
    async with served(configs, OAuthConfig()) as (market, url, session):
        merchant_id = next(iter(market.sellers))
        token = access_token(market, merchant_id)
        market.expire(merchant_id)
        for sent, code in ((token, "ACCESS_TOKEN_EXPIRED"), (None, "UNAUTHORIZED")):
            with pytest.raises(UpstreamError) as caught:
                await fetch(session, url, sent)
            assert caught.value.status == 401
            assert caught.value.retryable is False
            assert caught.value.hint == STATUS_HINTS[401]
            assert caught.value.vendor_errors[0]["code"] == code
        assert market.stats()["by_status"] == {"401": 2}


@asynccontextmanager
async def scripted(body: bytes) -> AsyncIterator[str]:
    async def locations(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/locations", locations)
    async with run_server(app, Listener(host="127.0.0.1")) as url:
        yield url


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'"x"', "$"),
        (b'{"locations": {}}', "locations"),
        (b'{"locations": [1]}', "locations[0]"),
        (b'{"locations": [{"status": "ACTIVE"}]}', "locations[0].id"),
        (b'{"locations": [{"id": "L1", "status": "ACTIVE"}, {"id": "L2"}]}', "locations[1].status"),
        (
            b'{"locations": [{"id": "L1", "status": "ACTIVE", "timezone": 3}]}',
            "locations[0].timezone",
        ),
        (b'{"errors": [{"code": "X"}]}', "errors"),
    ],
)
async def test_malformed_answer_names_the_field(body: bytes, field: str) -> None:
    """A 200 that is not a ListLocationsResponse raises UpstreamDataError naming the field."""
    async with scripted(body) as url, aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamDataError) as caught:
            await fetch(session, url, "t")
    assert caught.value.context["field"] == field


async def test_no_locations_key_is_an_empty_list() -> None:
    """Square omits an empty array: ``{}`` is no locations."""
    async with scripted(b"{}") as url, aiohttp.ClientSession() as session:
        assert await fetch(session, url, "t") == []
