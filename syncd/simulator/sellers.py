"""The simulator's Square app: many sellers, each with its own catalog, and the OAuth server.

A real Square app is authorised by many sellers; each grant yields a refresh token, traded at
``POST /oauth2/token`` for access tokens that expire. ``Marketplace`` holds the app's sellers
(``merchant_id -> Simulator``), issues and checks those tokens, and owns the app's one webhook
subscription: every seller's events go to the same URL, signed with the same key, and carry that
seller's ``merchant_id``.

Tokens are ``secrets.token_urlsafe`` strings, so one seller's token never guesses another's.
Everything is synchronous and runs on the event loop, like ``Simulator``.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from syncd.simulator.api import SquareError, error
from syncd.simulator.catalog import Simulator, format_seconds
from syncd.simulator.webhooks import REVOKER_TYPES, WebhookSender, WebhookTarget
from syncd.timeutil import NS_PER_S, now_ns

log = structlog.get_logger("syncd.simulator")

AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
_PKCE_REFRESH_TTL_NS = 90 * 86400 * NS_PER_S  # Square: a PKCE refresh token is good for 90 days


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """The app's OAuth credentials and token behaviour.

    ``rotate_refresh_tokens`` plays Square's PKCE flow (each refresh answers a new refresh token and
    the one sent stops working); False plays the code flow (the same refresh token comes back).
    """

    client_id: str = "sim-client"
    client_secret: str = "sim-secret"
    access_token_ttl: float = 30 * 86400.0  # seconds, like Square's 30 days
    rotate_refresh_tokens: bool = False

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ValueError("client_id and client_secret must be non-empty")
        if self.access_token_ttl <= 0:
            raise ValueError("access_token_ttl must be > 0")


@dataclass(slots=True)
class _AccessToken:
    merchant_id: str
    expires_ns: int
    revoked: bool = False


@dataclass(slots=True)
class _SellerTokens:
    """One seller's OAuth state: live refresh tokens, and how often each thing happened."""

    refresh_tokens: set[str]
    grants: int = 0
    refreshes: int = 0
    revocations: int = 0


def auth_error(code: str, detail: str, *, field: str | None = None) -> SquareError:
    """A 401 in Square's envelope, category AUTHENTICATION_ERROR."""
    return SquareError(401, [error(code, detail, field=field, category=AUTHENTICATION_ERROR)])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization[len("Bearer ") :] or None


class Marketplace:
    """The sellers of one Square app, its OAuth server and its webhook subscription."""

    def __init__(
        self,
        sellers: Sequence[Simulator],
        oauth: OAuthConfig | None = None,
        *,
        webhook: WebhookTarget | None = None,
        wall_ns: Callable[[], int] = now_ns,
    ) -> None:
        if not sellers:
            raise ValueError("a marketplace needs at least one seller")
        ids = [s.merchant_id for s in sellers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"merchant ids must differ (give sellers other seeds): {ids}")
        self.sellers: dict[str, Simulator] = {s.merchant_id: s for s in sellers}
        self.oauth = oauth if oauth is not None else OAuthConfig()
        self.wall_ns = wall_ns
        self.webhooks = self._shared_sender(sellers, webhook)
        self.requests = 0  # every API call, the OAuth routes included
        self.status_counts: Counter[int] = Counter()
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, str] = {}  # live refresh token -> merchant_id
        self._tokens = {mid: _SellerTokens(set()) for mid in self.sellers}

    def _shared_sender(
        self, sellers: Sequence[Simulator], webhook: WebhookTarget | None
    ) -> WebhookSender:
        """One sender for the app. A lone seller keeps its own (so ``sim.webhooks`` stays the live
        one); otherwise every seller is pointed at a new one. Events carry each seller's id."""
        if len(sellers) == 1:
            sender = sellers[0].webhooks
            if webhook is not None:
                sender.target = webhook
        else:
            sender = WebhookSender(webhook)
        for sim in sellers:
            sim.webhooks = sender
            sim.event_merchant_id = sim.merchant_id
        return sender

    # ---- sellers ---------------------------------------------------------------------------------

    @property
    def first(self) -> Simulator:
        return next(iter(self.sellers.values()))

    def seller(self, merchant_id: str | None = None) -> Simulator:
        """The seller with this id (None: the first one); KeyError when there is none."""
        if merchant_id is None:
            return self.first
        return self.sellers[merchant_id]

    def describe(self) -> list[dict[str, object]]:
        """Each seller: merchant id, location ids, and whether it has a static token or grants."""
        return [
            {
                "merchant_id": mid,
                "location_ids": list(sim.location_ids),
                "static_token": sim.config.access_token is not None,
                "grants": len(self._tokens[mid].refresh_tokens),
            }
            for mid, sim in self.sellers.items()
        ]

    # ---- OAuth -----------------------------------------------------------------------------------

    def grant(self, merchant_id: str) -> str:
        """The seller authorises the app: a new refresh token (earlier grants stay valid)."""
        state = self._tokens[merchant_id]
        token = "EQAA" + secrets.token_urlsafe(32)
        self._refresh[token] = merchant_id
        state.refresh_tokens.add(token)
        state.grants += 1
        log.info("simulator_oauth_granted", merchant_id=merchant_id)
        return token

    def check_client(self, client_id: object, client_secret: object) -> None:
        """401 unless the app's credentials match. Without a secret, only the PKCE flow
        (``rotate_refresh_tokens``) is allowed, as on Square."""
        cfg = self.oauth
        ok_id = isinstance(client_id, str) and hmac.compare_digest(
            client_id.encode(), cfg.client_id.encode()
        )
        if client_secret is None:
            ok_secret = cfg.rotate_refresh_tokens
        else:
            ok_secret = isinstance(client_secret, str) and hmac.compare_digest(
                client_secret.encode(), cfg.client_secret.encode()
            )
        if not (ok_id and ok_secret):
            raise auth_error(
                "UNAUTHORIZED", "Invalid client_id or client_secret.", field="client_secret"
            )

    def refresh(self, refresh_token: str) -> dict[str, object]:
        """Trade a live refresh token for a new access token: the ObtainToken answer.

        With rotation the answer carries a new refresh token and the one sent stops working once
        the new one exists; without, the same refresh token comes back.
        """
        merchant_id = self._refresh.get(refresh_token)
        if merchant_id is None:
            raise auth_error(
                "UNAUTHORIZED",
                "The refresh token is invalid, expired or revoked.",
                field="refresh_token",
            )
        state = self._tokens[merchant_id]
        now = self.wall_ns()
        if self.oauth.rotate_refresh_tokens:
            answer_refresh = self._rotate(merchant_id, refresh_token)
        else:
            answer_refresh = refresh_token
        # Whole seconds, rounded up: the text Square writes is then the exact expiry.
        ttl_ns = int(self.oauth.access_token_ttl * NS_PER_S)
        expires_ns = -(-(now + ttl_ns) // NS_PER_S) * NS_PER_S
        access_token = "EAAA" + secrets.token_urlsafe(48)
        self._access[access_token] = _AccessToken(merchant_id, expires_ns)
        state.refreshes += 1
        log.info("simulator_oauth_refreshed", merchant_id=merchant_id, refreshes=state.refreshes)
        out: dict[str, object] = {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_at": format_seconds(expires_ns),
            "merchant_id": merchant_id,
            "refresh_token": answer_refresh,
            "short_lived": False,
        }
        if self.oauth.rotate_refresh_tokens:
            out["refresh_token_expires_at"] = format_seconds(now + _PKCE_REFRESH_TTL_NS)
        return out

    def _rotate(self, merchant_id: str, old: str) -> str:
        """PKCE rotation: issue the next refresh token, then retire the one that was used."""
        new = "EQAA" + secrets.token_urlsafe(32)
        self._refresh[new] = merchant_id
        state = self._tokens[merchant_id]
        state.refresh_tokens.add(new)
        del self._refresh[old]
        state.refresh_tokens.discard(old)
        return new

    def expire(self, merchant_id: str) -> int:
        """Every live access token of the seller expires now; how many there were."""
        if merchant_id not in self._tokens:
            raise KeyError(merchant_id)
        now = self.wall_ns()
        n = 0
        for token in self._access.values():
            if token.merchant_id == merchant_id and not token.revoked and token.expires_ns > now:
                token.expires_ns = now
                n += 1
        return n

    def revoke(self, merchant_id: str, *, revoker_type: str = "MERCHANT") -> bool:
        """The seller's grant is gone: all its access and refresh tokens stop working, and the
        app's webhook target (if any) gets ``oauth.authorization.revoked``. Returns whether that
        event was queued."""
        if revoker_type not in REVOKER_TYPES:
            raise ValueError(f"revoker_type must be one of {sorted(REVOKER_TYPES)}")
        state = self._tokens[merchant_id]
        for token in self._access.values():
            if token.merchant_id == merchant_id:
                token.revoked = True
        for refresh_token in state.refresh_tokens:
            del self._refresh[refresh_token]
        state.refresh_tokens.clear()
        state.revocations += 1
        revoked_at = format_seconds(self.wall_ns())
        sent = self.webhooks.notify_revoked(
            merchant_id, revoker_type=revoker_type, revoked_at=revoked_at
        )
        log.info(
            "simulator_oauth_revoked",
            merchant_id=merchant_id,
            revoker_type=revoker_type,
            webhook=sent,
        )
        return sent

    def revoke_access_token(self, access_token: str, *, only_this: bool) -> str:
        """RevokeToken by access token: that one token (``only_this``) or the whole grant.
        Returns the seller's id; raises KeyError for a token this app never issued."""
        token = self._access[access_token]
        if only_this:
            token.revoked = True
        else:
            self.revoke(token.merchant_id, revoker_type="APPLICATION")
        return token.merchant_id

    def has_grants(self, merchant_id: str) -> bool:
        """Whether the seller ever authorised the app (then it no longer runs without auth)."""
        state = self._tokens[merchant_id]
        return state.grants > 0

    # ---- API authentication ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Simulator:
        """The seller an API call acts for, from its ``Authorization`` header.

        An issued OAuth access token names its seller (401 ACCESS_TOKEN_EXPIRED or
        ACCESS_TOKEN_REVOKED when it no longer works); so does a seller's static
        ``config.access_token``. A lone seller with neither a static token nor OAuth grants needs no
        auth at all. Anything else is 401 UNAUTHORIZED.
        """
        token = bearer_token(authorization)
        if token is not None:
            issued = self._access.get(token)
            if issued is not None:
                if issued.revoked:
                    raise auth_error("ACCESS_TOKEN_REVOKED", "The access token has been revoked.")
                if self.wall_ns() >= issued.expires_ns:
                    raise auth_error("ACCESS_TOKEN_EXPIRED", "The access token has expired.")
                return self.sellers[issued.merchant_id]
            for sim in self.sellers.values():
                static = sim.config.access_token
                if static is not None and hmac.compare_digest(token.encode(), static.encode()):
                    return sim
        if len(self.sellers) == 1:
            sim = self.first
            if sim.config.access_token is None and not self.has_grants(sim.merchant_id):
                return sim
        raise SquareError.scripted(401)

    def stats(self) -> dict[str, object]:
        """Per-seller OAuth counters (``GET /_sim/stats``): a refresh storm shows up here."""
        now = self.wall_ns()
        live: Counter[str] = Counter(
            t.merchant_id for t in self._access.values() if not t.revoked and t.expires_ns > now
        )
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.status_counts.items())},
            "sellers": {
                mid: {
                    "grants": state.grants,
                    "refresh_tokens": len(state.refresh_tokens),
                    "token_refreshes": state.refreshes,
                    "revocations": state.revocations,
                    "live_access_tokens": live[mid],
                }
                for mid, state in self._tokens.items()
            },
        }
