"""The simulator as one Square app with many sellers: OAuth tokens, ListLocations, seller isolation
and app-level webhooks, over a real loopback socket (serve_marketplace)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from syncd.simulator import (
    BATCH_RETRIEVE_PATH,
    LOCATIONS_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    Marketplace,
    OAuthConfig,
    Simulator,
    SimulatorConfig,
    WebhookTarget,
    serve_marketplace,
)
from syncd.simulator.webhooks import SIGNATURE_HEADER, sign
from syncd.timeutil import NS_PER_S, parse_ns
from syncd.web.app import Listener, run_server

FROZEN_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
Json = dict[str, Any]


def two_sellers(**kwargs: Any) -> list[SimulatorConfig]:
    return [SimulatorConfig(items=4, locations=2, seed=seed, **kwargs) for seed in (1, 2)]


class Client:
    """A thin JSON client for one served marketplace."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Json]:
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(
            method, self.url + path, data=data, headers=headers
        ) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else {}

    async def control(self, path: str, body: Json | None = None) -> Json:
        status, out = await self.call("POST", "/_sim/" + path, body or {})
        assert status == 200, out
        return out

    async def token(self, refresh_token: str, **overrides: Any) -> tuple[int, Json]:
        body = {
            "client_id": "sim-client",
            "client_secret": "sim-secret",
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            **overrides,
        }
        return await self.call("POST", TOKEN_PATH, {k: v for k, v in body.items() if v is not None})

    async def access_token(self, merchant_id: str) -> str:
        grant = await self.control("oauth/grant", {"merchant_id": merchant_id})
        status, out = await self.token(grant["refresh_token"])
        assert status == 200, out
        return str(out["access_token"])

    async def counts(self, access_token: str | None) -> tuple[int, Json]:
        headers = {} if access_token is None else {"Authorization": f"Bearer {access_token}"}
        return await self.call("POST", BATCH_RETRIEVE_PATH, {}, headers)

    async def locations(self, access_token: str) -> tuple[int, Json]:
        headers = {"Authorization": f"Bearer {access_token}", "Square-Version": "2025-01-23"}
        return await self.call("GET", LOCATIONS_PATH, None, headers)


@asynccontextmanager
async def served(
    configs: list[SimulatorConfig],
    oauth: OAuthConfig | None = None,
    webhook: WebhookTarget | None = None,
) -> AsyncIterator[tuple[Marketplace, Client]]:
    async with (
        serve_marketplace(configs, oauth, webhook=webhook) as (market, url),
        aiohttp.ClientSession() as session,
    ):
        yield market, Client(session, url)


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[tuple[bytes, str]]]]:
    """A webhook receiver answering 200; yields its URL and what it got (body, signature)."""
    got: list[tuple[bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", receive)
    async with run_server(app, Listener(host="127.0.0.1")) as url:
        yield f"{url}/hook", got


def codes(out: Json) -> list[tuple[str, str]]:
    return [(e["category"], e["code"]) for e in out["errors"]]


def ids(out: Json) -> set[tuple[str, str]]:
    return {(r["catalog_object_id"], r["location_id"]) for r in out.get("counts", [])}


async def test_each_token_reads_only_its_own_sellers_counts_and_locations() -> None:
    """Seller A's access token sees A's counts and locations, never B's; with two sellers a call
    without a token is 401 UNAUTHORIZED."""
    async with served(two_sellers(), OAuthConfig()) as (market, client):
        a, b = market.sellers.values()
        assert a.merchant_id != b.merchant_id
        token_a = await client.access_token(a.merchant_id)
        token_b = await client.access_token(b.merchant_id)
        for token, sim, other in ((token_a, a, b), (token_b, b, a)):
            status, out = await client.counts(token)
            assert status == 200
            assert ids(out) == ids({"counts": sim.snapshot()})
            assert not ids(out) & ids({"counts": other.snapshot()})
            status, out = await client.locations(token)
            assert status == 200
            assert [loc["id"] for loc in out["locations"]] == sim.location_ids
            assert {loc["merchant_id"] for loc in out["locations"]} == {sim.merchant_id}
        status, out = await client.counts(None)
        assert (status, codes(out)) == (401, [("AUTHENTICATION_ERROR", "UNAUTHORIZED")])
        # Each call counts for the seller it acted for; one no seller was found for, the first.
        assert a.status_counts == {200: 2, 401: 1}
        assert b.status_counts == {200: 2}


async def test_token_answer_has_squares_shape() -> None:
    """ObtainToken answers access_token, token_type bearer, expires_at (RFC 3339 Z, ttl ahead),
    merchant_id, refresh_token and short_lived false."""
    async with served(two_sellers(), OAuthConfig(access_token_ttl=3600)) as (market, client):
        merchant_id = next(iter(market.sellers))
        grant = await client.control("oauth/grant", {"merchant_id": merchant_id})
        status, out = await client.token(grant["refresh_token"])
    assert status == 200
    assert set(out) == {
        "access_token",
        "token_type",
        "expires_at",
        "merchant_id",
        "refresh_token",
        "short_lived",
    }
    assert out["token_type"] == "bearer"
    assert out["short_lived"] is False
    assert out["merchant_id"] == merchant_id
    assert out["refresh_token"] == grant["refresh_token"]  # code flow: the same one comes back
    assert out["expires_at"].endswith("Z")
    ahead = parse_ns(out["expires_at"]) - market.wall_ns()
    assert 3599 * NS_PER_S < ahead <= 3601 * NS_PER_S


@pytest.mark.parametrize("rotate", [False, True])
async def test_refresh_token_rotation(rotate: bool) -> None:
    """Code flow: the same refresh token keeps working. PKCE flow (rotation): each refresh answers
    a new one, the one sent then fails with 401, and the new one works."""
    oauth = OAuthConfig(rotate_refresh_tokens=rotate)
    async with served(two_sellers(), oauth) as (market, client):
        merchant_id = next(iter(market.sellers))
        first = (await client.control("oauth/grant", {"merchant_id": merchant_id}))["refresh_token"]
        status, out = await client.token(first)
        assert status == 200
        second = out["refresh_token"]
        status, again = await client.token(first)
        if rotate:
            assert second != first
            assert "refresh_token_expires_at" in out
            assert (status, codes(again)) == (401, [("AUTHENTICATION_ERROR", "UNAUTHORIZED")])
            status, again = await client.token(second)
            assert status == 200
            assert again["refresh_token"] not in (first, second)
        else:
            assert second == first
            assert status == 200
            assert again["refresh_token"] == first
        stats = market.stats()["sellers"]
        assert isinstance(stats, dict)
        assert stats[merchant_id]["token_refreshes"] == 2


async def test_expired_access_token_is_401_access_token_expired_until_refreshed() -> None:
    """/_sim/oauth/expire makes the seller's tokens answer 401 ACCESS_TOKEN_EXPIRED (not the other
    seller's); a refresh gives a working one again."""
    async with served(two_sellers(), OAuthConfig()) as (market, client):
        a, b = market.sellers
        token_a, token_b = await client.access_token(a), await client.access_token(b)
        assert await client.control("oauth/expire", {"merchant_id": a}) == {"expired": 1}
        status, out = await client.counts(token_a)
        assert (status, codes(out)) == (401, [("AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED")])
        status, out = await client.locations(token_a)
        assert (status, codes(out)) == (401, [("AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED")])
        assert (await client.counts(token_b))[0] == 200
        assert (await client.counts(await client.access_token(a)))[0] == 200


def test_access_tokens_expire_with_the_clock() -> None:
    """An access token works until its ttl has passed, then answers ACCESS_TOKEN_EXPIRED."""
    now = [FROZEN_NS]
    sim = Simulator(SimulatorConfig(items=1))
    market = Marketplace([sim], OAuthConfig(access_token_ttl=60), wall_ns=lambda: now[0])
    out = market.refresh(market.grant(sim.merchant_id))
    assert out["expires_at"] == "2026-01-01T00:01:00Z"
    header = f"Bearer {out['access_token']}"
    now[0] += 59 * NS_PER_S
    assert market.authenticate(header) is sim
    now[0] += NS_PER_S
    with pytest.raises(Exception, match="ACCESS_TOKEN_EXPIRED"):
        market.authenticate(header)


async def test_token_route_rejects_bad_clients_and_unknown_tokens() -> None:
    """A wrong client id or secret, an unknown refresh token, or a code-flow call without a
    secret answer 401; another grant type or no refresh token answer 400."""
    async with served(two_sellers(), OAuthConfig()) as (market, client):
        refresh = (
            await client.control("oauth/grant", {"merchant_id": next(iter(market.sellers))})
        )["refresh_token"]
        for overrides in (
            {"client_secret": "wrong"},
            {"client_id": "other-app"},
            {"client_secret": None},  # the PKCE flow needs rotate_refresh_tokens
        ):
            status, out = await client.token(refresh, **overrides)
            assert (status, out["errors"][0]["code"]) == (401, "UNAUTHORIZED"), overrides
        status, out = await client.token("EQAAnot-a-token")
        assert (status, out["errors"][0]["field"]) == (401, "refresh_token")
        status, out = await client.token(refresh, grant_type="authorization_code")
        assert (status, out["errors"][0]["field"]) == (400, "grant_type")
        status, out = await client.call(
            "POST",
            TOKEN_PATH,
            {"client_id": "sim-client", "client_secret": "sim-secret", "grant_type": "x"},
        )
        assert status == 400
        assert market.stats()["by_status"] == {"400": 2, "401": 4}


async def test_pkce_refresh_needs_no_client_secret() -> None:
    """With rotation (Square's PKCE flow) a refresh with client_id only is accepted."""
    async with served(two_sellers(), OAuthConfig(rotate_refresh_tokens=True)) as (market, client):
        refresh = (
            await client.control("oauth/grant", {"merchant_id": next(iter(market.sellers))})
        )["refresh_token"]
        status, out = await client.token(refresh, client_secret=None)
        assert status == 200
        assert out["refresh_token"] != refresh


async def test_revoke_kills_tokens_and_sends_a_signed_revoked_event() -> None:
    """Revoking a seller's grant: its access tokens answer ACCESS_TOKEN_REVOKED, its refresh tokens
    401, the other seller is untouched, and the app's webhook URL gets one signed
    oauth.authorization.revoked event for that merchant."""
    async with receiver() as (hook_url, got):
        target = WebhookTarget(hook_url, "app-key")
        async with served(two_sellers(), OAuthConfig(), target) as (market, client):
            a, b = market.sellers
            refresh_a = (await client.control("oauth/grant", {"merchant_id": a}))["refresh_token"]
            token_a = (await client.token(refresh_a))[1]["access_token"]
            token_b = await client.access_token(b)
            out = await client.control("oauth/revoke", {"merchant_id": a})
            assert out == {"merchant_id": a, "webhook": True}
            status, out = await client.counts(token_a)
            assert (status, codes(out)) == (
                401,
                [("AUTHENTICATION_ERROR", "ACCESS_TOKEN_REVOKED")],
            )
            assert (await client.token(refresh_a))[0] == 401
            assert (await client.counts(token_b))[0] == 200
            async with asyncio.timeout(5):
                await market.webhooks.drain()
    [(body, signature)] = got
    assert signature == sign("app-key", hook_url, body)
    event = orjson.loads(body)
    assert event["type"] == "oauth.authorization.revoked"
    assert event["merchant_id"] == a
    assert event["data"]["type"] == "revocation"
    assert event["data"]["object"]["revocation"]["revoker_type"] == "MERCHANT"
    parse_ns(event["data"]["object"]["revocation"]["revoked_at"])


async def test_oauth2_revoke_route() -> None:
    """POST /oauth2/revoke needs ``Authorization: Client <secret>`` and the client id; by
    merchant_id it revokes that seller's whole grant."""
    async with served(two_sellers(), OAuthConfig()) as (market, client):
        a = next(iter(market.sellers))
        token = await client.access_token(a)
        body = {"client_id": "sim-client", "merchant_id": a}
        for headers in (
            {},
            {"Authorization": "Client wrong"},
            {"Authorization": f"Bearer {token}"},
        ):
            status, _ = await client.call("POST", REVOKE_PATH, body, headers)
            assert status == 401
        good = {"Authorization": "Client sim-secret"}
        status, out = await client.call("POST", REVOKE_PATH, {"client_id": "sim-client"}, good)
        assert status == 400
        assert (await client.counts(token))[0] == 200
        assert await client.call("POST", REVOKE_PATH, body, good) == (200, {"success": True})
        status, out = await client.counts(token)
        assert codes(out) == [("AUTHENTICATION_ERROR", "ACCESS_TOKEN_REVOKED")]


async def test_change_webhooks_carry_each_sellers_merchant_id() -> None:
    """Both sellers' change events go to the app's one URL, signed with the app's key, each
    carrying the merchant_id of the seller whose count changed."""
    async with receiver() as (hook_url, got):
        target = WebhookTarget(hook_url, "app-key", notification_url="https://app.example/hook")
        async with served(two_sellers(), None, target) as (market, client):
            a, b = market.sellers
            changed_a = (await client.control("mutate", {"n": 2, "merchant_id": a}))["changed"]
            changed_b = (await client.control("mutate", {"n": 3, "merchant_id": b}))["changed"]
            async with asyncio.timeout(5):
                await market.webhooks.drain()
    seen: dict[str, list[Json]] = {a: [], b: []}
    for body, signature in got:
        assert signature == sign("app-key", "https://app.example/hook", body)
        event = orjson.loads(body)
        seen[event["merchant_id"]] += event["data"]["object"]["inventory_counts"]
    assert sorted(seen[a], key=str) == sorted(changed_a, key=str)
    assert sorted(seen[b], key=str) == sorted(changed_b, key=str)


async def test_locations_add_and_status() -> None:
    """A new location is listed ACTIVE with its name and has one count per item per state, issued
    as changes (an incremental query sees them); a status change lists it INACTIVE."""
    configs = [SimulatorConfig(items=4, locations=2, seed=1, states=("IN_STOCK", "WASTE"))]
    async with served(configs, OAuthConfig()) as (market, client):
        sim = market.first
        token = await client.access_token(sim.merchant_id)
        _, before = await client.counts(token)
        newest = max(parse_ns(r["calculated_at"]) for r in before["counts"])
        out = await client.control("locations/add", {"name": "Pop-up"})
        location = out["location"]
        assert (location["name"], location["status"]) == ("Pop-up", "ACTIVE")
        status, listed = await client.locations(token)
        assert [loc["id"] for loc in listed["locations"]][-1] == location["id"]
        status, page = await client.call(
            "POST",
            BATCH_RETRIEVE_PATH,
            {"updated_after": before["counts"][0]["calculated_at"]},
            {"Authorization": f"Bearer {token}"},
        )
        assert status == 200
        assert {r["location_id"] for r in page["counts"]} == {location["id"]}
        assert len(page["counts"]) == 4 * 2
        assert all(parse_ns(r["calculated_at"]) > newest for r in page["counts"])
        await client.control(
            "locations/status", {"location_id": sim.location_ids[0], "status": "INACTIVE"}
        )
        _, listed = await client.locations(token)
        assert [loc["status"] for loc in listed["locations"]] == ["INACTIVE", "ACTIVE", "ACTIVE"]
        for bad in (
            {"location_id": "NOPE", "status": "ACTIVE"},
            {"location_id": sim.location_ids[0], "status": "CLOSED"},
        ):
            status, _ = await client.call("POST", "/_sim/locations/status", bad)
            assert status == 400


def test_locations_have_squares_fields_and_merchant_ids_follow_the_seed() -> None:
    """Location JSON carries id, name, merchant_id, status, timezone, created_at, business_name;
    the merchant id is stable per seed, differs between seeds, and config.merchant_id wins."""
    sim = Simulator(SimulatorConfig(items=1, locations=2, seed=5), wall_ns=lambda: FROZEN_NS)
    [first, second] = sim.locations()
    assert {
        "id",
        "name",
        "merchant_id",
        "status",
        "timezone",
        "created_at",
        "business_name",
    } <= set(first)
    assert (first["name"], second["name"]) == ("Store 1", "Store 2")
    assert first["status"] == "ACTIVE"
    assert first["timezone"] == "America/Los_Angeles"
    assert first["merchant_id"] == sim.merchant_id
    parse_ns(first["created_at"])
    again = Simulator(SimulatorConfig(items=1, seed=5))
    assert again.merchant_id == sim.merchant_id
    assert Simulator(SimulatorConfig(items=1, seed=6)).merchant_id != sim.merchant_id
    assert Simulator(SimulatorConfig(items=1, merchant_id="MLX")).merchant_id == "MLX"
    with pytest.raises(ValueError, match="merchant ids must differ"):
        Marketplace([Simulator(SimulatorConfig(items=1)), Simulator(SimulatorConfig(items=1))])


async def test_a_lone_seller_needs_no_auth_until_it_grants_the_app() -> None:
    """One seller without a static token answers without auth (as before); once it has
    authorised the app, calls need its token."""
    async with served([SimulatorConfig(items=2)], OAuthConfig()) as (market, client):
        assert (await client.counts(None))[0] == 200
        token = await client.access_token(market.first.merchant_id)
        assert (await client.counts(None))[0] == 401
        assert (await client.counts(token))[0] == 200


async def test_static_tokens_pick_their_seller() -> None:
    """Among many sellers, each static config.access_token reads its own seller."""
    configs = [
        SimulatorConfig(items=3, seed=1, access_token="tok-a"),
        SimulatorConfig(items=3, seed=2, access_token="tok-b"),
    ]
    async with served(configs) as (market, client):
        a, b = market.sellers.values()
        assert ids((await client.counts("tok-a"))[1]) == ids({"counts": a.snapshot()})
        assert ids((await client.counts("tok-b"))[1]) == ids({"counts": b.snapshot()})
        assert (await client.counts("tok-c"))[0] == 401


async def test_control_routes_name_sellers() -> None:
    """/_sim/sellers lists merchant ids and location ids; merchant_id picks the seller of a
    control route (absent: the first), an unknown one is 404; stats carry per-seller refreshes."""
    async with served(two_sellers(), OAuthConfig()) as (market, client):
        a, b = market.sellers.values()
        listed = (await client.control("sellers"))["sellers"]
        assert [(s["merchant_id"], s["location_ids"]) for s in listed] == [
            (a.merchant_id, a.location_ids),
            (b.merchant_id, b.location_ids),
        ]
        await client.control("mutate", {"n": 1, "merchant_id": b.merchant_id})
        assert (a.mutations, b.mutations) == (0, 1)
        await client.control("mutate", {"n": 2})
        assert (a.mutations, b.mutations) == (2, 1)
        status, counts = await client.call("GET", f"/_sim/counts?merchant_id={b.merchant_id}")
        assert counts["counts"] == b.snapshot()
        status, _ = await client.call("POST", "/_sim/mutate", {"merchant_id": "NOBODY"})
        assert status == 404
        await client.access_token(b.merchant_id)
        status, stats = await client.call("GET", f"/_sim/stats?merchant_id={b.merchant_id}")
        assert stats["merchant_id"] == b.merchant_id
        refreshes = {m: s["token_refreshes"] for m, s in stats["oauth"]["sellers"].items()}
        assert refreshes == {a.merchant_id: 0, b.merchant_id: 1}
