"""syncd.upstream.catalog (SearchCatalogObjects) against the simulator served on 127.0.0.1, and
against a scripted server for the request it sends, malformed answers and retries; plus
SquareLocations.locations() against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from syncd.errors import UpstreamDataError, UpstreamError
from syncd.model import CatalogItem, CatalogPage, CatalogVariation, Location
from syncd.simulator import Marketplace, OAuthConfig, SimulatorConfig, serve_marketplace
from syncd.sync.ports import CatalogSource, LocationDetailsSource
from syncd.timeutil import parse_ns
from syncd.upstream.catalog import (
    CATALOG_STATUS_HINTS,
    MAX_LIMIT,
    OP_SEARCH_CATALOG,
    SEARCH_CATALOG_PATH,
    SquareCatalog,
    _object,
    _quick_object,
    parse_catalog_page,
)
from syncd.upstream.http import RetryInfo, RetryPolicy, make_session
from syncd.upstream.locations import SquareLocations
from syncd.upstream.square import SquareOptions
from tests.fakes.square_scripted import Reply, ScriptedServer, run_scripted, square_error

TOKEN = "EAAAl-catalog-secret-token"
VERSION = "2025-01-23"
FAST = RetryPolicy(max_retries=3, backoff_initial=0.001, backoff_max=0.001)
UPDATED = "2026-01-02T03:04:05.678Z"


def _conforms(source: SquareCatalog, locations: SquareLocations) -> tuple[Any, ...]:
    """Static conformance: mypy rejects this if the adapters stop satisfying the ports."""
    catalog: CatalogSource = source
    details: LocationDetailsSource = locations
    return catalog, details


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(name="session")
async def fixture_session() -> AsyncIterator[aiohttp.ClientSession]:
    session = make_session(request_timeout=5.0, connect_timeout=2.0, user_agent="syncd-test/0")
    yield session
    await session.close()


def options(url: str, token: str | None = TOKEN, **overrides: Any) -> SquareOptions:
    return SquareOptions(
        base_url=url, access_token=token, api_version=VERSION, **{"policy": FAST, **overrides}
    )


@asynccontextmanager
async def simulated(
    config: SimulatorConfig, session: aiohttp.ClientSession, *, limit: int = MAX_LIMIT
) -> AsyncIterator[tuple[Marketplace, SquareCatalog]]:
    """One seller with a static token behind a real server, and a client for it."""
    config.access_token = TOKEN
    async with serve_marketplace([config]) as (market, url):
        yield market, SquareCatalog(session, options(url), page_limit=limit, sleep=no_sleep)


async def read_chain(
    source: SquareCatalog, begin_time: str | None = None, limit: int | None = None
) -> list[CatalogPage]:
    """Follow one cursor chain to its end."""
    pages: list[CatalogPage] = []
    cursor: str | None = None
    while True:
        page = await source.search_catalog(begin_time=begin_time, cursor=cursor, limit=limit)
        pages.append(page)
        if page.cursor is None:
            return pages
        assert len(pages) < 1000, "chain does not end"
        cursor = page.cursor


def objects(pages: list[CatalogPage]) -> list[CatalogItem | CatalogVariation]:
    return [o for p in pages for o in p.objects]


def object_id(obj: CatalogItem | CatalogVariation) -> str:
    return obj.item_id if isinstance(obj, CatalogItem) else obj.variation_id


# ---- against the simulator ----------------------------------------------------------------------


async def test_full_read_in_pages_is_the_whole_library(session: aiohttp.ClientSession) -> None:
    """A chain at limit 7 reads every item and variation once, over several pages with one
    latest_time; every count's object is a live variation of a listed item, and each field is
    the simulator's."""
    async with simulated(SimulatorConfig(items=60, locations=2, seed=4), session) as (market, src):
        sim = market.first
        pages = await read_chain(src, limit=7)
        snapshot = {str(o["id"]): o for o in sim.catalog_snapshot()}
    got = objects(pages)
    assert len(pages) > 5
    assert all(len(p.objects) <= 7 for p in pages)
    assert sorted(object_id(o) for o in got) == sorted(snapshot)
    assert {p.latest_time for p in pages} == {max(str(o["updated_at"]) for o in snapshot.values())}
    variations = {v.variation_id: v for p in pages for v in p.variations}
    items = {i.item_id: i for p in pages for i in p.items}
    assert {r["catalog_object_id"] for r in sim.snapshot()} == set(variations)
    for var in variations.values():
        assert var.item_id in items
        assert var.variation_id in items[var.item_id].variation_ids
        raw = snapshot[var.variation_id]
        data = raw["item_variation_data"]
        assert isinstance(data, dict)
        assert (var.name, var.sku, var.gtin) == (data["name"], data.get("sku"), data.get("upc"))
        assert var.track_inventory == data.get("track_inventory")
        assert (var.version, var.updated_at) == (raw["version"], raw["updated_at"])
        assert var.updated_at_ns == parse_ns(var.updated_at)
        assert not var.is_deleted
    assert any(v.sku is None for v in variations.values())  # some variations have no SKU
    assert any(v.gtin is not None for v in variations.values())
    assert any(v.location_track_inventory for v in variations.values())
    assert all(p.skipped == 0 for p in pages)


async def test_incremental_after_a_rename_returns_only_the_changed_objects(
    session: aiohttp.ClientSession,
) -> None:
    """begin_time = the last chain's latest_time reads exactly the renamed objects, with their
    new names and newer versions; then nothing until the next change."""
    async with simulated(SimulatorConfig(items=30, locations=1), session) as (market, src):
        sim = market.first
        first = await read_chain(src)
        before = {object_id(o): o for o in objects(first)}
        latest = first[-1].latest_time
        assert latest is not None
        renamed = sim.rename_catalog(3) + sim.rename_catalog(1, "ITEM")
        second = await read_chain(src, begin_time=latest)
        third = await read_chain(src, begin_time=second[-1].latest_time)
    changed = objects(second)
    assert sorted(object_id(o) for o in changed) == sorted(str(o["id"]) for o in renamed)
    for obj in changed:
        old = before[object_id(obj)]
        assert obj.version > old.version
        assert obj.updated_at_ns > parse_ns(latest)
        assert obj.name != old.name
    assert second[-1].latest_time is not None
    assert parse_ns(second[-1].latest_time) > parse_ns(latest)
    assert objects(third) == []
    assert third[-1].latest_time == second[-1].latest_time


async def test_deleted_objects_come_back_marked(session: aiohttp.ClientSession) -> None:
    """A deleted item and its variations come back is_deleted, newer, in the incremental read and
    in every later full read (include_deleted_objects is always asked for)."""
    async with simulated(SimulatorConfig(items=20, locations=1), session) as (market, src):
        sim = market.first
        latest = (await read_chain(src))[-1].latest_time
        deleted = sim.delete_catalog(1, "ITEM")
        incremental = objects(await read_chain(src, begin_time=latest))
        full = {object_id(o): o for o in objects(await read_chain(src))}
    assert {object_id(o) for o in incremental} == {str(o["id"]) for o in deleted}
    assert all(o.is_deleted for o in incremental)
    assert [type(o) for o in incremental].count(CatalogItem) == 1
    assert all(full[object_id(o)].is_deleted for o in incremental)
    assert sum(o.is_deleted for o in full.values()) == len(incremental)


async def test_added_variations_have_counts_and_join_their_items(
    session: aiohttp.ClientSession,
) -> None:
    """New variations come with their parent items (whose variation_ids now list them), and the
    simulator's counts name them."""
    async with simulated(SimulatorConfig(items=10, locations=2), session) as (market, src):
        sim = market.first
        latest = (await read_chain(src))[-1].latest_time
        sim.add_variations(2)
        got = objects(await read_chain(src, begin_time=latest))
        counted = {r["catalog_object_id"] for r in sim.snapshot()}
    new = [o for o in got if isinstance(o, CatalogVariation)]
    parents = {o.item_id: o for o in got if isinstance(o, CatalogItem)}
    assert len(new) == 2
    for var in new:
        assert var.variation_id in counted
        assert var.variation_id in parents[str(var.item_id)].variation_ids


async def test_served_faults_are_retried_and_a_bad_cursor_is_flagged(
    session: aiohttp.ClientSession,
) -> None:
    """The simulator's scripted 429 and 503 answers are retried (reported to on_retry); a cursor
    it never issued is a 400 INVALID_CURSOR, flagged cursor_invalid and not retried."""
    retries: list[RetryInfo] = []
    async with simulated(SimulatorConfig(items=5, locations=1), session) as (market, src):
        sim = market.first
        url = src._url.removesuffix(SEARCH_CATALOG_PATH)
        source = SquareCatalog(session, options(url), sleep=no_sleep, on_retry=retries.append)
        sim.fail_catalog_next(429, retry_after=0)
        sim.fail_catalog_next(503)
        page = await source.search_catalog(begin_time=None, cursor=None)
        with pytest.raises(UpstreamError) as caught:
            await source.search_catalog(begin_time=None, cursor="not-a-cursor")
        statuses = dict(market.status_counts)
    assert len(page.objects) == len(sim.catalog_snapshot())
    assert [(r.op, r.status, r.attempt) for r in retries] == [
        (OP_SEARCH_CATALOG, 429, 1),
        (OP_SEARCH_CATALOG, 503, 2),
    ]
    assert caught.value.status == 400
    assert caught.value.context["cursor_invalid"] is True
    assert caught.value.context["had_cursor"] is True
    assert statuses == {429: 1, 503: 1, 200: 1, 400: 1}


class Keeper:
    """An OAuth token port (``AccessTokens``) over the simulator's OAuth server."""

    def __init__(self, market: Marketplace, merchant_id: str, first: str) -> None:
        self.market, self.merchant_id, self.current = market, merchant_id, first
        self.rejections = 0

    async def token(self) -> str:
        return self.current

    async def rejected(self, token: str) -> str:
        self.rejections += 1
        grant = self.market.grant(self.merchant_id)
        self.current = str(self.market.refresh(grant)["access_token"])
        return self.current


async def test_oauth_token_port_refreshes_once_after_a_401(session: aiohttp.ClientSession) -> None:
    """With ``tokens=``, an expired access token is answered 401, refreshed once through the
    port, and the page is read with the new token; each seller reads its own library."""
    configs = [SimulatorConfig(items=3, locations=1, seed=seed) for seed in (1, 2)]
    async with serve_marketplace(configs, OAuthConfig()) as (market, url):
        a, b = market.sellers.values()
        expired = str(market.refresh(market.grant(a.merchant_id))["access_token"])
        market.expire(a.merchant_id)
        keeper = Keeper(market, a.merchant_id, expired)
        source = SquareCatalog(session, options(url, token=None), tokens=keeper, sleep=no_sleep)
        page = await source.search_catalog(begin_time=None, cursor=None)
        ids_a = {str(o["id"]) for o in a.catalog_snapshot()}
        ids_b = {str(o["id"]) for o in b.catalog_snapshot()}
    assert keeper.rejections == 1
    assert {object_id(o) for o in page.objects} == ids_a
    assert not ids_a & ids_b


async def test_locations_lists_every_location_with_its_details(
    session: aiohttp.ClientSession,
) -> None:
    """SquareLocations.locations() answers every location (inactive and renamed ones too) with
    name, status and timezone, and reports the merchant; active_location_ids is unchanged."""
    merchants: list[str] = []
    async with serve_marketplace([SimulatorConfig(items=1, locations=3)]) as (market, url):
        sim = market.first
        sim.set_location_status(sim.location_ids[1], "INACTIVE")
        sim.rename_location(sim.location_ids[2], "Warehouse")
        client = SquareLocations(session, options(url, token=None), on_merchant=merchants.append)
        got = await client.locations()
        active = await client.active_location_ids()
    first, second, third = sim.location_ids
    assert got == (
        Location(first, "Store 1", "ACTIVE", sim.merchant_id, "America/Los_Angeles"),
        Location(second, "Store 2", "INACTIVE", sim.merchant_id, "America/New_York"),
        Location(third, "Warehouse", "ACTIVE", sim.merchant_id, "America/Chicago"),
    )
    assert active == tuple(sorted((first, third)))
    assert merchants == [sim.merchant_id, sim.merchant_id]


# ---- against a scripted server ------------------------------------------------------------------


def variation(object_id: str = "V1", **data: Any) -> dict[str, Any]:
    return {
        "type": "ITEM_VARIATION",
        "id": object_id,
        "updated_at": UPDATED,
        "version": 1767323045678,
        "is_deleted": False,
        "present_at_all_locations": True,
        "item_variation_data": {"item_id": "I1", "name": "Small", "sku": "SKU-1", **data},
    }


def item(object_id: str = "I1", **data: Any) -> dict[str, Any]:
    return {
        "type": "ITEM",
        "id": object_id,
        "updated_at": UPDATED,
        "version": 1767323045678,
        "item_data": {"name": "Coffee", "variations": [variation()], **data},
    }


def ok(*objs: dict[str, Any], cursor: str | None = None, **extra: Any) -> Reply:
    body: dict[str, Any] = {"objects": list(objs), "latest_time": UPDATED, **extra}
    if cursor is not None:
        body["cursor"] = cursor
    return Reply(200, body)


async def scripted_page(
    session: aiohttp.ClientSession, server: ScriptedServer, **kwargs: Any
) -> CatalogPage:
    source = SquareCatalog(session, options(server.url), sleep=no_sleep)
    args: dict[str, Any] = {"begin_time": None, "cursor": None, **kwargs}
    return await source.search_catalog(**args)


async def test_request_body_and_headers(session: aiohttp.ClientSession) -> None:
    """The first page asks for items and variations, deleted ones included, at the limit; an
    incremental continuation adds begin_time and the cursor; token and Square-Version travel."""
    async with run_scripted([ok(cursor="C1"), ok()]) as server:
        await scripted_page(session, server)
        await scripted_page(session, server, begin_time=UPDATED, cursor="C1", limit=50)
    first, second = server.requests
    assert (first.method, first.path) == ("POST", SEARCH_CATALOG_PATH)
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["Square-Version"] == VERSION
    assert first.json == {
        "object_types": ["ITEM", "ITEM_VARIATION"],
        "include_deleted_objects": True,
        "limit": MAX_LIMIT,
    }
    assert second.json == {
        "object_types": ["ITEM", "ITEM_VARIATION"],
        "include_deleted_objects": True,
        "limit": 50,
        "begin_time": UPDATED,
        "cursor": "C1",
    }


async def test_fields_map_to_the_records(session: aiohttp.ClientSession) -> None:
    """Every mapped field: upc is the gtin, an empty SKU is None, overrides keep the set ones, a
    version in proto3's string form is read, a deleted object may lack its data; other types are
    skipped and counted; latest_time and the Date header are kept."""
    objs = [
        item(),
        variation(
            "V1",
            upc="012345678905",
            measurement_unit_id="MU1",
            track_inventory=False,
            location_overrides=[
                {"location_id": "L1", "track_inventory": True},
                {"location_id": "L2"},
            ],
        ),
        {**variation("V2", sku=""), "version": "1767323045679"},
        {
            "type": "ITEM_VARIATION",
            "id": "V3",
            "updated_at": UPDATED,
            "version": 5,
            "is_deleted": True,
        },
        {"type": "CATEGORY", "id": "C1"},
        {"type": "TAX", "id": "T1", "tax_data": {}},
        {"type": "CATEGORY", "id": "C2"},
    ]
    date = "Fri, 02 Jan 2026 03:04:06 GMT"
    async with run_scripted(
        [Reply(200, {"objects": objs, "latest_time": UPDATED}, headers={"Date": date})]
    ) as server:
        page = await scripted_page(session, server)
    ns = parse_ns(UPDATED)
    assert page.objects == (
        CatalogItem("I1", "Coffee", False, 1767323045678, UPDATED, ns, None, ("V1",)),
        CatalogVariation(
            "V1", "I1", "Small", "SKU-1", "012345678905", "MU1", False, False,
            1767323045678, UPDATED, ns, True, (("L1", True),),
        ),
        CatalogVariation(
            "V2", "I1", "Small", None, None, None, None, False, 1767323045679, UPDATED, ns, True
        ),
        CatalogVariation("V3", None, None, None, None, None, None, True, 5, UPDATED, ns),
    )  # fmt: skip
    assert (page.skipped, page.skipped_types) == (3, (("CATEGORY", 2), ("TAX", 1)))
    assert (page.cursor, page.latest_time) == (None, UPDATED)
    assert page.server_date_ns == parse_ns("2026-01-02T03:04:06Z")
    assert [i.item_id for i in page.items] == ["I1"]
    assert [v.variation_id for v in page.variations] == ["V1", "V2", "V3"]


def test_an_empty_answer_is_an_empty_page() -> None:
    """Square omits empty arrays: ``{}`` is a last, empty page without latest_time."""
    assert parse_catalog_page({}) == CatalogPage((), None, None)
    assert parse_catalog_page({"errors": [], "cursor": ""}).cursor is None


@pytest.mark.parametrize(
    ("body", "field", "index", "object_id"),
    [
        ([], "$", None, None),
        ({"objects": {}}, "objects", None, None),
        ({"objects": [], "cursor": 7}, "cursor", None, None),
        ({"objects": [], "latest_time": "yesterday"}, "latest_time", None, None),
        ({"objects": [1]}, "objects[0]", 0, None),
        ({"objects": [{"id": "X"}]}, "objects[0].type", 0, None),
        ({"objects": [{"type": "ITEM", "id": ""}]}, "objects[0].id", 0, None),
        (
            {"objects": [item(), {**variation(), "updated_at": "2026-13-01T00:00:00Z"}]},
            "objects[1].updated_at",
            1,
            "V1",
        ),
        ({"objects": [{**variation(), "version": None}]}, "objects[0].version", 0, "V1"),
        ({"objects": [{**variation(), "version": True}]}, "objects[0].version", 0, "V1"),
        ({"objects": [{**variation(), "version": -1}]}, "objects[0].version", 0, "V1"),
        ({"objects": [{**variation(), "version": "12a"}]}, "objects[0].version", 0, "V1"),
        ({"objects": [{**variation(), "is_deleted": "no"}]}, "objects[0].is_deleted", 0, "V1"),
        (
            {"objects": [{**variation(), "present_at_all_locations": 1}]},
            "objects[0].present_at_all_locations",
            0,
            "V1",
        ),
        (
            {"objects": [{**variation(), "item_variation_data": None}]},
            "objects[0].item_variation_data",
            0,
            "V1",
        ),
        (
            {"objects": [{**variation(), "item_variation_data": []}]},
            "objects[0].item_variation_data",
            0,
            "V1",
        ),
        (
            {"objects": [variation(item_id=None)]},
            "objects[0].item_variation_data.item_id",
            0,
            "V1",
        ),
        ({"objects": [variation(sku=5)]}, "objects[0].item_variation_data.sku", 0, "V1"),
        ({"objects": [variation(upc=["1"])]}, "objects[0].item_variation_data.upc", 0, "V1"),
        (
            {"objects": [variation(track_inventory="yes")]},
            "objects[0].item_variation_data.track_inventory",
            0,
            "V1",
        ),
        (
            {"objects": [variation(location_overrides={})]},
            "objects[0].item_variation_data.location_overrides",
            0,
            "V1",
        ),
        (
            {"objects": [variation(location_overrides=[{"track_inventory": True}])]},
            "objects[0].item_variation_data.location_overrides[0].location_id",
            0,
            "V1",
        ),
        (
            {
                "objects": [
                    variation(location_overrides=[{"location_id": "L", "track_inventory": 0}])
                ]
            },
            "objects[0].item_variation_data.location_overrides[0].track_inventory",
            0,
            "V1",
        ),
        ({"objects": [{**item(), "item_data": None}]}, "objects[0].item_data", 0, "I1"),
        ({"objects": [item(name=3)]}, "objects[0].item_data.name", 0, "I1"),
        ({"objects": [item(variations="V1")]}, "objects[0].item_data.variations", 0, "I1"),
        (
            {"objects": [item(variations=[{"type": "ITEM"}])]},
            "objects[0].item_data.variations[0].type",
            0,
            "I1",
        ),
        (
            {"objects": [item(variations=[{"type": "ITEM_VARIATION"}])]},
            "objects[0].item_data.variations[0].id",
            0,
            "I1",
        ),
    ],
)
async def test_malformed_answers_raise_data_errors_with_context(
    session: aiohttp.ClientSession,
    body: Any,
    field: str,
    index: int | None,
    object_id: str | None,
) -> None:
    """A 200 that is not a SearchCatalogObjectsResponse raises UpstreamDataError naming the
    field, the object's index and id; the message names the operation, never retried."""
    async with run_scripted([Reply(200, body)]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await scripted_page(session, server)
    err = caught.value
    assert err.context["field"] == field
    assert err.context.get("index") == index
    assert err.context.get("object_id") == object_id
    assert (err.op, err.status, err.retryable) == (OP_SEARCH_CATALOG, 200, False)
    named = "response" if field == "$" else field
    assert err.message.startswith(f"{OP_SEARCH_CATALOG}: {named} ")
    assert len(server.requests) == 1


async def test_errors_on_a_200_and_a_body_that_is_not_json(session: aiohttp.ClientSession) -> None:
    """``errors`` on a 200 is a data error carrying the vendor errors; a non-JSON 2xx body too."""
    replies = [Reply(200, square_error("INTERNAL_SERVER_ERROR")), Reply(200, raw=b"<html>")]
    async with run_scripted(replies) as server:
        with pytest.raises(UpstreamDataError) as first:
            await scripted_page(session, server)
        with pytest.raises(UpstreamDataError) as second:
            await scripted_page(session, server)
    assert first.value.context["field"] == "errors"
    assert first.value.vendor_errors[0]["code"] == "INTERNAL_SERVER_ERROR"
    assert second.value.op == OP_SEARCH_CATALOG


async def test_429_and_5xx_are_retried_like_the_counts_client(
    session: aiohttp.ClientSession,
) -> None:
    """429 (with Retry-After), 500, 502, 503 and 504 are retried with backoff until a 200; when
    every attempt fails the error is retryable, with the attempts and the last status."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    replies = [
        Reply(429, square_error("RATE_LIMITED"), headers={"Retry-After": "2"}),
        Reply(500, square_error("INTERNAL_SERVER_ERROR")),
        Reply(503, raw=b"<html>proxy</html>"),
        ok(variation()),
        *[Reply(s, square_error("SERVICE_UNAVAILABLE")) for s in (502, 504, 503, 503)],
    ]
    async with run_scripted(replies) as server:
        source = SquareCatalog(session, options(server.url), sleep=sleep, rand=lambda: 1.0)
        page = await source.search_catalog(begin_time=None, cursor=None)
        with pytest.raises(UpstreamError) as caught:
            await source.search_catalog(begin_time=None, cursor=None)
    assert [v.variation_id for v in page.variations] == ["V1"]
    assert slept[:3] == [2.0, 0.001, 0.001]
    err = caught.value
    assert (err.retryable, err.status, err.context["attempts"]) == (True, 503, 4)
    assert err.op == OP_SEARCH_CATALOG
    assert len(server.requests) == 8


async def test_other_4xx_fail_at_once_with_the_catalog_hints(
    session: aiohttp.ClientSession,
) -> None:
    """401 and 403 are not retried; 403 names the ITEMS_READ scope; a 400 other than
    INVALID_CURSOR is not flagged as a cursor problem."""
    replies = [
        Reply(401, square_error("UNAUTHORIZED", category="AUTHENTICATION_ERROR")),
        Reply(403, square_error("INSUFFICIENT_SCOPES", category="AUTHENTICATION_ERROR")),
        Reply(400, square_error("INVALID_VALUE", detail="bad begin_time", field="begin_time")),
    ]
    async with run_scripted(replies) as server:
        errors = []
        for _ in replies:
            with pytest.raises(UpstreamError) as caught:
                await scripted_page(session, server, cursor="C")
            errors.append(caught.value)
    assert [e.status for e in errors] == [401, 403, 400]
    assert errors[0].hint == CATALOG_STATUS_HINTS[401]
    assert errors[1].hint is not None
    assert "ITEMS_READ" in errors[1].hint
    assert "cursor_invalid" not in errors[2].context
    assert errors[2].hint == "bad begin_time (field: begin_time)"
    assert len(server.requests) == 3


async def test_a_cursor_that_does_not_advance_is_a_data_error(
    session: aiohttp.ClientSession,
) -> None:
    """An answer whose cursor is the one sent would loop forever: a data error."""
    async with run_scripted([ok(variation(), cursor="SAME")]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await scripted_page(session, server, cursor="SAME")
    assert caught.value.context["field"] == "cursor"


async def test_the_limit_is_checked(session: aiohttp.ClientSession) -> None:
    """A limit out of 1..1000 is a caller's mistake: ValueError before any request."""
    async with run_scripted([]) as server:
        with pytest.raises(ValueError, match="limit"):
            SquareCatalog(session, options(server.url), page_limit=0)
        source = SquareCatalog(session, options(server.url))
        with pytest.raises(ValueError, match="limit"):
            await source.search_catalog(begin_time=None, cursor=None, limit=MAX_LIMIT + 1)
    assert server.requests == []


QUICK_OBJECTS = [
    variation(),
    variation(sku="", upc="012345678905", measurement_unit_id="U", track_inventory=False),
    variation(
        location_overrides=[{"location_id": "L1", "track_inventory": True}, {"location_id": "L2"}]
    ),
    item(),
    item(variations=[]),
    {**item(), "present_at_all_locations": False, "is_deleted": False},
]
CAREFUL_OBJECTS = [
    {**variation(), "is_deleted": True},
    {**variation(), "is_deleted": 0},
    {**variation(), "version": "1767323045678"},
    {**variation(), "version": True},
    {**variation(), "updated_at": "2026-13-01T00:00:00Z"},
    {**variation(), "item_variation_data": None, "is_deleted": True},
    {**variation(), "present_at_all_locations": 1},
    variation(item_id=None),
    variation(sku=5),
    variation(track_inventory=1),
    variation(location_overrides=[{"location_id": "", "track_inventory": True}]),
    variation(location_overrides=[{"location_id": "L", "track_inventory": 0}]),
    variation(location_overrides={}),
    item(name=3),
    item(variations=[{"type": "ITEM"}]),
    item(variations=[{"id": ""}]),
    {**item(), "item_data": None},
    {**item(), "type": "CATEGORY"},
    {"type": "ITEM", "id": ""},
    [],
]


@pytest.mark.parametrize("raw", QUICK_OBJECTS + CAREFUL_OBJECTS)
def test_the_quick_path_reads_what_the_careful_one_does_or_leaves_it(raw: Any) -> None:
    """Per object, the fast path of a first sync either gives exactly the careful path's record
    or leaves the object to it (which reads it or names what is wrong): well-formed live objects
    take the fast path, anything deleted or off the careful one."""
    quick = _quick_object(raw, {})
    if any(raw is q for q in QUICK_OBJECTS):
        assert quick is not None
    else:
        assert quick is None
    if quick is not None:
        assert quick == _object(raw, 0)
