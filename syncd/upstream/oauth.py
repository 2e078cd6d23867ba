"""Square's ObtainToken with ``grant_type=refresh_token``: a fresh access token for one seller.

``POST /oauth2/token``. Network errors, 429 and 5xx are retried by ``request_json``. A 400 or 401
that says the grant is gone (an unknown, expired or revoked refresh token) raises
``OAuthGrantRevoked``; one that blames the app's own credentials or request stays a plain
``UpstreamError``, since re-authorising the seller would not fix it. Tokens are never logged nor
put in an error: they are kept out of ``TokenGrant``'s repr too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import aiohttp

from syncd.errors import OAuthGrantRevoked, UpstreamDataError, UpstreamError
from syncd.timeutil import TimestampError, parse_ns
from syncd.upstream.http import RetryPolicy, parse_vendor_errors, request_json

OP_OBTAIN_TOKEN = "square.oauth.obtain_token"
TOKEN_PATH = "/oauth2/token"
REAUTHORISE_HINT = "the seller must authorise the app again; set a new refresh token"
CLIENT_HINT = "check the app's OAuth client id and client secret"
# Fields whose blame is the app's, not the seller's grant.
_CLIENT_FIELDS = frozenset({"client_id", "client_secret"})
_GRANT_FIELDS = frozenset({"refresh_token", ""})
_STATUS_HINTS: Mapping[int, str] = {401: REAUTHORISE_HINT}


@dataclasses.dataclass(frozen=True, slots=True)
class TokenGrant:
    """An ObtainToken answer. ``refresh_token`` is the one Square answered: the one sent (code
    flow) or a new one that replaces it (PKCE flow); store it either way."""

    access_token: str = dataclasses.field(repr=False)
    expires_at: str
    expires_at_ns: int
    merchant_id: str | None
    refresh_token: str | None = dataclasses.field(repr=False)


def oauth_vendor_errors(status: int, body: Any) -> list[dict[str, Any]]:
    """Square's ``errors`` array, or the OAuth API's older ``{"message", "type"}`` body."""
    errors = parse_vendor_errors(status, body)
    if errors or not isinstance(body, dict):
        return errors
    message, kind = body.get("message"), body.get("type")
    if isinstance(message, str) or isinstance(kind, str):
        return [{"code": kind, "detail": message}]
    return []


async def refresh_access_token(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    client_id: str,
    client_secret: str | None,
    refresh_token: str,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> TokenGrant:
    """Trade the seller's refresh token for a new access token.

    ``client_secret`` None is Square's PKCE flow. Raises ``OAuthGrantRevoked`` when the grant is
    gone, ``UpstreamError`` for other failures, ``UpstreamDataError`` (naming the field) for a 2xx
    answer that is not an ObtainTokenResponse.
    """
    body = {"client_id": client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
    if client_secret is not None:
        body["client_secret"] = client_secret
    try:
        response = await request_json(
            session,
            "POST",
            base_url.rstrip("/") + TOKEN_PATH,
            op=OP_OBTAIN_TOKEN,
            policy=policy,
            json_body=body,
            sleep=sleep,
            rand=rand,
            error_parser=oauth_vendor_errors,
            status_hints=_STATUS_HINTS,
        )
    except UpstreamError as exc:
        if exc.status in (400, 401) and not isinstance(exc, UpstreamDataError):
            raise _rejection(exc) from exc
        raise
    return parse_token(response.body)


def _rejection(exc: UpstreamError) -> UpstreamError:
    """Why Square refused: the app's credentials or request, or else the seller's grant."""
    fields = {str(e.get("field") or "") for e in exc.vendor_errors}
    if fields & _CLIENT_FIELDS:
        return UpstreamError(
            f"{OP_OBTAIN_TOKEN}: Square rejected the app's client credentials (HTTP {exc.status})",
            status=exc.status,
            vendor_errors=exc.vendor_errors,
            op=OP_OBTAIN_TOKEN,
            hint=CLIENT_HINT,
        )
    if exc.status == 400 and not fields <= _GRANT_FIELDS:
        return exc  # a malformed request (another field): the grant may be fine
    return OAuthGrantRevoked(
        f"{OP_OBTAIN_TOKEN}: Square refused the refresh token (HTTP {exc.status}); "
        "the grant is invalid, expired or revoked",
        status=exc.status,
        vendor_errors=exc.vendor_errors,
        op=OP_OBTAIN_TOKEN,
        hint=REAUTHORISE_HINT,
    )


def parse_token(body: Any) -> TokenGrant:
    """An ObtainTokenResponse as a ``TokenGrant``; any shape problem names its field."""
    if not isinstance(body, dict):
        _data_error(f"response is not a JSON object but {type(body).__name__}", field="$")
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        _data_error("access_token is missing or not a non-empty string", field="access_token")
    expires_at = body.get("expires_at")
    if not isinstance(expires_at, str):
        _data_error("expires_at is missing or not a string", field="expires_at")
    try:
        expires_at_ns = parse_ns(expires_at)
    except TimestampError:
        _data_error(f"expires_at is not an RFC 3339 timestamp: {expires_at[:40]!r}", "expires_at")
    merchant_id = _optional_string(body, "merchant_id")
    refresh_token = _optional_string(body, "refresh_token")
    return TokenGrant(access_token, expires_at, expires_at_ns, merchant_id, refresh_token)


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        _data_error(f"{name} is not a non-empty string", field=name)
    return value


def _data_error(message: str, field: str) -> NoReturn:
    raise UpstreamDataError(
        f"{OP_OBTAIN_TOKEN}: {message}", status=200, op=OP_OBTAIN_TOKEN, field=field
    )
