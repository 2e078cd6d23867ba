"""OAuth sources and discovered locations, against the simulator's marketplace on 127.0.0.1 and a
real SQLite file: TokenKeeper (refresh, persistence, 401, rotation, revocation) and the engine's
partitioning by the seller's active locations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from syncd.simulator import Marketplace, OAuthConfig, SimulatorConfig, serve_marketplace
from syncd.store import Store
from syncd.store import credentials as stored
from syncd.sync.credentials import SourceUnauthorized, TokenKeeper
from syncd.sync.engine import EngineOptions, SyncEngine
from syncd.timeutil import NS_PER_S, now_ns
from syncd.upstream.http import RetryPolicy
from syncd.upstream.locations import SquareLocations
from syncd.upstream.oauth import TokenGrant, refresh_access_token
from syncd.upstream.square import SquareCounts, SquareOptions
from tests.helpers import changes, mirror, replay

POLICY = RetryPolicy(max_retries=1, backoff_initial=0.0, backoff_max=0.0)


@pytest.fixture
async def market() -> AsyncIterator[tuple[Marketplace, str]]:
    configs = [SimulatorConfig(locations=2, items=5, seed=seed) for seed in (1, 2)]
    async with serve_marketplace(configs, OAuthConfig(rotate_refresh_tokens=True)) as served:
        yield served


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@asynccontextmanager
async def _store(path: Path) -> AsyncIterator[Store]:
    store = await Store.open(path)
    try:
        yield store
    finally:
        await store.aclose()


def _keeper(
    store: Store,
    session: aiohttp.ClientSession,
    url: str,
    refresh_token: str,
    clock: Callable[[], int] = now_ns,
) -> TokenKeeper:
    async def refresh(token: str) -> TokenGrant:
        return await refresh_access_token(
            session,
            base_url=url,
            client_id="sim-client",
            client_secret="sim-secret",
            refresh_token=token,
            policy=POLICY,
        )

    return TokenKeeper(
        store,
        "seller_a",
        refresh,
        configured_refresh_token=refresh_token,
        refresh_after=7 * 86400,
        alert_after=8 * 86400,
        clock=clock,
    )


def _options(url: str) -> SquareOptions:
    return SquareOptions(base_url=url, access_token=None, api_version="2025-08-20", policy=POLICY)


async def _read_all(counts: SquareCounts) -> int:
    return sum(
        [len(page.counts) async for page in counts.pages(location_ids=None, updated_after=None)]
    )


async def test_refresh_is_persisted_and_reused_after_restart(
    tmp_path: Path, market: tuple[Marketplace, str], session: aiohttp.ClientSession
) -> None:
    """The first call refreshes and stores the grant (with the rotated refresh token); a keeper
    over the same database (a restart) reuses the token without calling the upstream again."""
    sim, url = market
    seller = sim.first
    initial = sim.grant(seller.merchant_id)
    db = tmp_path / "syncd.db"
    async with _store(db) as store:
        keeper = _keeper(store, session, url, initial)
        counts = SquareCounts(session, _options(url), tokens=keeper)
        assert await _read_all(counts) == seller.count_total()
        saved = await store.read(lambda c: stored.load(c, "seller_a"))
        assert saved is not None
        assert saved.merchant_id == seller.merchant_id
        assert saved.refresh_token not in (None, initial)  # PKCE: rotated, and kept
        assert keeper.refreshes == 1
    async with _store(db) as store:
        again = _keeper(store, session, url, initial)
        assert await again.token() == saved.access_token
        assert again.refreshes == 0
    stats = sim.stats()["sellers"][seller.merchant_id]  # type: ignore[index]
    assert stats["token_refreshes"] == 1


async def test_a_401_refreshes_once_and_the_read_goes_on(
    tmp_path: Path, market: tuple[Marketplace, str], session: aiohttp.ClientSession
) -> None:
    sim, url = market
    seller = sim.first
    async with _store(tmp_path / "syncd.db") as store:
        keeper = _keeper(store, session, url, sim.grant(seller.merchant_id))
        counts = SquareCounts(session, _options(url), tokens=keeper)
        first = await keeper.token()
        assert sim.expire(seller.merchant_id) == 1
        assert await _read_all(counts) == seller.count_total()
        assert keeper.refreshes == 2
        assert await keeper.token() != first


async def test_a_short_lived_token_is_refreshed_at_half_its_life_not_on_every_call(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A token that lives less than twice the expiry margin (here an hour; Square's
    short-lived tokens live 24 hours) is reused until half its lifetime is gone, then
    refreshed once: not refreshed on every call for being "within a day of its expiry"."""
    skew = [0]
    configs = [SimulatorConfig(locations=1, items=2, seed=1)]
    async with (
        serve_marketplace(configs, OAuthConfig(access_token_ttl=3600)) as (sim, url),
        _store(tmp_path / "syncd.db") as store,
    ):
        keeper = _keeper(
            store,
            session,
            url,
            sim.grant(sim.first.merchant_id),
            clock=lambda: now_ns() + skew[0],
        )
        first = await keeper.token()
        for _ in range(4):
            assert await keeper.token() == first
        assert keeper.refreshes == 1
        skew[0] = 1700 * NS_PER_S  # not yet half of the hour
        assert await keeper.token() == first
        skew[0] = 1850 * NS_PER_S
        second = await keeper.token()
        assert second != first
        assert await keeper.token() == second
        assert keeper.refreshes == 2


async def test_a_revoked_grant_marks_the_source_unauthorized(
    tmp_path: Path, market: tuple[Marketplace, str], session: aiohttp.ClientSession
) -> None:
    """Revocation: the refresh fails, the source is stored unauthorized, and later calls fail fast
    without asking the upstream again; a new grant in the config brings it back."""
    sim, url = market
    seller = sim.first
    async with _store(tmp_path / "syncd.db") as store:
        keeper = _keeper(store, session, url, sim.grant(seller.merchant_id))
        await keeper.token()
        sim.revoke(seller.merchant_id)
        sim.expire(seller.merchant_id)
        counts = SquareCounts(session, _options(url), tokens=keeper)
        with pytest.raises(SourceUnauthorized):
            await _read_all(counts)
        assert keeper.unauthorized
        saved = await store.read(lambda c: stored.load(c, "seller_a"))
        assert saved is not None
        assert saved.status == stored.STATUS_UNAUTHORIZED
        requests = sim.first.requests
        with pytest.raises(SourceUnauthorized):
            await keeper.token()
        assert sim.first.requests == requests
        keeper.replace_configured(sim.grant(seller.merchant_id))
        assert await _read_all(counts) == seller.count_total()
        assert not keeper.unauthorized


async def test_partitions_follow_the_sellers_active_locations(
    tmp_path: Path, market: tuple[Marketplace, str], session: aiohttp.ClientSession
) -> None:
    """No location_ids configured: the engine partitions by the active locations, picks up a new
    one on a later pass, and a full pass removes the rows of one turned inactive."""
    sim, url = market
    seller = sim.first
    db = tmp_path / "syncd.db"
    async with _store(db) as store:
        keeper = _keeper(store, session, url, sim.grant(seller.merchant_id))
        options = _options(url)
        engine = SyncEngine(
            store,
            SquareCounts(session, options, tokens=keeper),
            EngineOptions(source="seller_a", locations_interval=0.0),
            locations=SquareLocations(session, options, tokens=keeper),
        )
        first = await engine.run_pass()
        assert first.ok
        assert sorted(first.partitions) == sorted(seller.location_ids)
        added = seller.add_location("Store 3")
        second = await engine.run_pass()
        assert added["id"] in second.partitions
        assert second.kind == "full"  # a new partition has no watermark yet
        gone = seller.location_ids[0]
        seller.set_location_status(gone, "INACTIVE")
        third = await engine.run_pass(full=True)
        assert third.ok
        assert gone not in third.partitions
    rows = mirror(db, "seller_a")
    assert rows
    assert all(key[1] != gone for key in rows)
    assert replay([c for c in changes(db) if c["source"] == "seller_a"]) == rows


async def test_discovery_takes_a_recent_answer_of_the_catalog_pass(
    tmp_path: Path, market: tuple[Marketplace, str], session: aiohttp.ClientSession
) -> None:
    """Discovery takes the locations the catalog pass read less than ``locations_interval`` ago
    (no second ListLocations: one per interval, not two), and asks again once the answer it used
    is that old, so a new location is picked up."""
    interval = 0.5
    sim, url = market
    seller = sim.first
    async with _store(tmp_path / "syncd.db") as store:
        keeper = _keeper(store, session, url, sim.grant(seller.merchant_id))
        options = _options(url)
        locations = SquareLocations(session, options, tokens=keeper)
        await locations.locations()  # what a catalog pass reads
        answered = locations.answered_at
        assert answered is not None
        engine = SyncEngine(
            store,
            SquareCounts(session, options, tokens=keeper),
            EngineOptions(source="seller_a", locations_interval=interval),
            locations=locations,
        )
        first = await engine.run_pass()
        assert first.ok
        assert sorted(first.partitions) == sorted(seller.location_ids)
        assert locations.answered_at == answered  # no ListLocations of its own
        added = seller.add_location("Store 3")
        while time.monotonic() - answered < interval:  # bounded: the clock passes the interval
            await asyncio.sleep(interval / 10)
        second = await engine.run_pass()
    assert locations.answered_at is not None
    assert locations.answered_at > answered
    assert added["id"] in second.partitions
