"""syncd.upstream.oauth.refresh_access_token against the simulator's OAuth server on 127.0.0.1,
and against a scripted server for answers the simulator never gives (5xx, malformed bodies)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from syncd.errors import OAuthGrantRevoked, UpstreamDataError, UpstreamError
from syncd.simulator import Marketplace, OAuthConfig, SimulatorConfig, serve_marketplace
from syncd.timeutil import parse_ns
from syncd.upstream.http import RetryPolicy, make_session
from syncd.upstream.oauth import CLIENT_HINT, REAUTHORISE_HINT, TokenGrant, refresh_access_token
from syncd.web.app import Listener, run_server

POLICY = RetryPolicy(max_retries=2, backoff_initial=0.001, backoff_max=0.001)


async def no_sleep(_: float) -> None:
    return None


@asynccontextmanager
async def marketplace(
    oauth: OAuthConfig,
) -> AsyncIterator[tuple[Marketplace, str, aiohttp.ClientSession]]:
    configs = [SimulatorConfig(items=2, seed=seed) for seed in (1, 2)]
    async with serve_marketplace(configs, oauth) as (market, url):
        session = make_session(request_timeout=5, connect_timeout=2, user_agent="syncd-test")
        try:
            yield market, url, session
        finally:
            await session.close()


async def refresh(
    session: aiohttp.ClientSession, url: str, token: str, **kwargs: Any
) -> TokenGrant:
    args: dict[str, Any] = {"client_id": "sim-client", "client_secret": "sim-secret", **kwargs}
    return await refresh_access_token(
        session, base_url=url, refresh_token=token, policy=POLICY, sleep=no_sleep, **args
    )


async def test_refresh_returns_a_grant_that_reads_the_seller() -> None:
    """The grant has the seller's merchant id, an expiry parsed to ns, the refresh token Square
    answered (the same one: code flow); its repr shows neither token; it authenticates."""
    async with marketplace(OAuthConfig()) as (market, url, session):
        merchant_id = list(market.sellers)[1]
        token = market.grant(merchant_id)
        grant = await refresh(session, url, token)
        assert grant.merchant_id == merchant_id
        assert grant.refresh_token == token
        assert grant.expires_at_ns == parse_ns(grant.expires_at) > market.wall_ns()
        assert grant.access_token not in repr(grant)
        assert token not in repr(grant)
        assert market.authenticate(f"Bearer {grant.access_token}") is market.sellers[merchant_id]


async def test_rotation_hands_back_the_new_refresh_token() -> None:
    """PKCE flow (no client secret): the grant carries a new refresh token; the old one is then
    refused as a revoked grant."""
    async with marketplace(OAuthConfig(rotate_refresh_tokens=True)) as (market, url, session):
        token = market.grant(next(iter(market.sellers)))
        grant = await refresh(session, url, token, client_secret=None)
        assert grant.refresh_token is not None
        assert grant.refresh_token != token
        with pytest.raises(OAuthGrantRevoked):
            await refresh(session, url, token, client_secret=None)
        assert (await refresh(session, url, grant.refresh_token, client_secret=None)).access_token


async def test_revoked_or_unknown_grant_raises_oauth_grant_revoked() -> None:
    """After the seller revokes the grant, and for a token never issued, the refresh raises
    OAuthGrantRevoked: not retryable, with the re-authorise hint, HTTP status 401."""
    async with marketplace(OAuthConfig()) as (market, url, session):
        merchant_id = next(iter(market.sellers))
        token = market.grant(merchant_id)
        market.revoke(merchant_id)
        for refresh_token in (token, "EQAAnever-issued"):
            with pytest.raises(OAuthGrantRevoked) as caught:
                await refresh(session, url, refresh_token)
            assert caught.value.status == 401
            assert caught.value.retryable is False
            assert caught.value.hint == REAUTHORISE_HINT
        assert market.stats()["by_status"] == {"401": 2}  # one call each: never retried


async def test_wrong_client_secret_is_not_a_revoked_grant() -> None:
    """A 401 that blames the app's credentials is a plain UpstreamError naming the client config:
    re-authorising the seller would not help."""
    async with marketplace(OAuthConfig()) as (market, url, session):
        token = market.grant(next(iter(market.sellers)))
        with pytest.raises(UpstreamError) as caught:
            await refresh(session, url, token, client_secret="wrong")
        assert not isinstance(caught.value, OAuthGrantRevoked)
        assert caught.value.status == 401
        assert caught.value.hint == CLIENT_HINT


@asynccontextmanager
async def scripted(answers: list[tuple[int, bytes]]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A token endpoint answering the scripted (status, body) pairs in turn; yields its URL and the
    request bodies it got."""
    got: list[bytes] = []

    async def token(request: web.Request) -> web.Response:
        got.append(await request.read())
        status, body = answers.pop(0)
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/oauth2/token", token)
    async with run_server(app, Listener(host="127.0.0.1")) as url:
        yield url, got


GOOD = orjson.dumps(
    {
        "access_token": "EAAAsecret-access",
        "token_type": "bearer",
        "expires_at": "2026-02-01T00:00:00Z",
        "merchant_id": "M1",
        "refresh_token": "EQAAsecret-refresh",
    }
)


async def test_5xx_and_429_are_retried_and_no_token_is_logged() -> None:
    """A 503 and a 429 are retried; the third answer wins. Neither token appears in any log."""
    busy = b'{"errors":[{"category":"API_ERROR","code":"SERVICE_UNAVAILABLE"}]}'
    async with (
        scripted([(503, busy), (429, b"{}"), (200, GOOD)]) as (url, got),
        aiohttp.ClientSession() as session,
    ):
        with capture_logs() as logs:
            grant = await refresh(session, url, "EQAAsecret-refresh")
    assert grant.access_token == "EAAAsecret-access"
    assert grant.expires_at_ns == parse_ns("2026-02-01T00:00:00Z")
    assert len(got) == 3
    assert orjson.loads(got[0])["grant_type"] == "refresh_token"
    assert [e["event"] for e in logs] == ["upstream_retry", "upstream_retry"]
    assert "secret" not in repr(logs)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "$"),
        (b'{"expires_at": "2026-02-01T00:00:00Z"}', "access_token"),
        (b'{"access_token": "", "expires_at": "2026-02-01T00:00:00Z"}', "access_token"),
        (b'{"access_token": "EAAA1"}', "expires_at"),
        (b'{"access_token": "EAAA1", "expires_at": "next week"}', "expires_at"),
        (
            b'{"access_token": "EAAA1", "expires_at": "2026-02-01T00:00:00Z", "merchant_id": 7}',
            "merchant_id",
        ),
        (
            b'{"access_token": "EAAA1", "expires_at": "2026-02-01T00:00:00Z", "refresh_token": []}',
            "refresh_token",
        ),
    ],
)
async def test_malformed_answer_names_the_field(body: bytes, field: str) -> None:
    """A 200 that is not an ObtainTokenResponse raises UpstreamDataError naming the field."""
    async with scripted([(200, body)]) as (url, _), aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamDataError) as caught:
            await refresh(session, url, "EQAA1")
    assert caught.value.context["field"] == field
    assert "EAAA1" not in str(caught.value)


async def test_legacy_error_body_and_a_400_for_another_field() -> None:
    """The OAuth API's older ``{"message", "type"}`` 401 body is a revoked grant too; a 400 that
    names another request field is a plain UpstreamError (the grant may be fine)."""
    legacy = b'{"message": "Invalid refresh token", "type": "service.unauthorized"}'
    other = b'{"errors":[{"category":"INVALID_REQUEST_ERROR","code":"INVALID_VALUE","field":"grant_type"}]}'
    async with (
        scripted([(401, legacy), (400, other)]) as (url, _),
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(OAuthGrantRevoked) as revoked:
            await refresh(session, url, "EQAA1")
        assert revoked.value.vendor_errors[0]["detail"] == "Invalid refresh token"
        with pytest.raises(UpstreamError) as caught:
            await refresh(session, url, "EQAA1")
        assert not isinstance(caught.value, OAuthGrantRevoked)
        assert caught.value.status == 400
