"""One source's OAuth access token: refreshed on schedule, once on a 401, persisted, never logged.

Square's guidance: access tokens last 30 days; refresh every 7 days or sooner; alert on a token older
than 8 days. The keeper refreshes when the stored token is older than ``refresh_after`` or expires
within ``EXPIRY_MARGIN`` (within half its lifetime, for a token shorter-lived than twice that),
and once when the upstream rejects the current token. The answer (access token, expiry, merchant
id and, when Square rotates it, the new refresh token) is written to the database before it is
used, so a restart reuses it (no refresh storm) and a rotated refresh token is never lost. A
revoked grant marks the source ``unauthorized`` (logged, metric, stored); the keeper then raises
``SourceUnauthorized`` without calling the upstream again until the configuration gives a
different refresh token, or a refresh is asked for explicitly (``check_now``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from syncd.errors import OAuthGrantRevoked, SyncdError
from syncd.metrics import OAUTH_REFRESHES, OAUTH_TOKEN_AGE, SOURCE_UNAUTHORIZED
from syncd.store import Store
from syncd.store import credentials as stored
from syncd.store.credentials import STATUS_UNAUTHORIZED, StoredCredentials
from syncd.sync.ports import Grant, Refresher
from syncd.timeutil import NS_PER_S, format_ns, now_ns, parse_stored_ns

log = structlog.get_logger("syncd.credentials")

EXPIRY_MARGIN = 86_400.0  # refresh at the latest one day before the token expires (or at half
# the lifetime of a token that lives less than two days)


class SourceUnauthorized(SyncdError):
    """The source's OAuth grant is revoked or invalid; its passes fail until it is fixed."""


class TokenKeeper:
    """The current access token of one OAuth source (implements the upstream's token port)."""

    def __init__(
        self,
        store: Store,
        source: str,
        refresh: Refresher,
        *,
        configured_refresh_token: str,
        refresh_after: float,
        alert_after: float,
        clock: Callable[[], int] = now_ns,
        on_merchant: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self.source = source
        self._refresh = refresh
        self._configured = configured_refresh_token
        self.refresh_after = refresh_after
        self.alert_after = alert_after
        self._alerted_for: str | None = None
        self._clock = clock
        self._on_merchant = on_merchant
        self._lock = asyncio.Lock()
        self._state: StoredCredentials | None = None
        self._loaded = False
        self._failed_with: frozenset[str] = frozenset()
        self.refreshes = 0

    @property
    def unauthorized(self) -> bool:
        return self._state is not None and self._state.status == STATUS_UNAUTHORIZED

    @property
    def merchant_id(self) -> str | None:
        return None if self._state is None else self._state.merchant_id

    async def token(self) -> str:
        """A usable access token, refreshing first when it is due (one refresh at a time)."""
        async with self._lock:
            await self._load()
            if self._due():
                await self._refresh_locked()
            assert self._state is not None
            assert self._state.access_token is not None
            return self._state.access_token

    async def rejected(self, token: str) -> str:
        """The upstream answered 401 to ``token``: refresh once (unless another caller already
        did) and return the new token."""
        async with self._lock:
            current = self._state.access_token if self._state else None
            if current == token or current is None:
                await self._refresh_locked()
            assert self._state is not None
            assert self._state.access_token is not None
            return self._state.access_token

    async def check_now(self) -> None:
        """Refresh now (e.g. on an ``oauth.authorization.revoked`` webhook): a revoked grant is
        found before the first 401. Failures are recorded, never raised."""
        async with self._lock:
            await self._load()
            self._failed_with = frozenset()
            with contextlib.suppress(SyncdError):
                await self._refresh_locked()

    async def _load(self) -> None:
        if self._loaded:
            return
        self._state = await self._store.read(lambda conn: stored.load(conn, self.source))
        self._loaded = True
        if self._state is not None and self._state.merchant_id and self._on_merchant:
            self._on_merchant(self._state.merchant_id)
        SOURCE_UNAUTHORIZED.labels(self.source).set(1 if self.unauthorized else 0)

    def _due(self) -> bool:
        state = self._state
        if state is None or state.access_token is None or state.status == STATUS_UNAUTHORIZED:
            return True
        now = self._clock()
        if state.refreshed_at is None or state.expires_at is None:
            return True
        # Memoised parses: the same two instants are read on every request until a refresh.
        refreshed = parse_stored_ns(state.refreshed_at)
        age = now - refreshed
        OAUTH_TOKEN_AGE.labels(self.source).set(age / NS_PER_S)
        if age >= self.alert_after * NS_PER_S and self._alerted_for != state.refreshed_at:
            self._alerted_for = state.refreshed_at  # once per token, not once per request
            log.warning(
                "oauth_token_old",
                source=self.source,
                age_s=round(age / NS_PER_S),
                alert_after_s=self.alert_after,
                expires_at=state.expires_at,
                hint="refreshes keep failing; see oauth_refresh_failed",
            )
        expires = parse_stored_ns(state.expires_at)
        left = expires - now
        # A token that lives less than twice the margin (Square's short-lived 24-hour tokens,
        # say) is due at half its lifetime, else it would be due from the start and every
        # request would refresh it.
        lifetime = expires - refreshed
        margin = min(EXPIRY_MARGIN * NS_PER_S, lifetime // 2)
        return age >= self.refresh_after * NS_PER_S or left <= margin

    def _candidates(self) -> list[str]:
        """Refresh tokens to try: the stored one (it may have rotated), then the configured one."""
        out: list[str] = []
        for token in (self._state.refresh_token if self._state else None, self._configured):
            if token and token not in out and token not in self._failed_with:
                out.append(token)
        return out

    async def _refresh_locked(self) -> None:
        candidates = self._candidates()
        if not candidates:
            raise self._unauthorized_error()
        last: OAuthGrantRevoked | None = None
        for refresh_token in candidates:
            try:
                grant = await self._refresh(refresh_token)
            except OAuthGrantRevoked as exc:
                last = exc
                self._failed_with |= {refresh_token}
                continue
            except SyncdError as exc:
                OAUTH_REFRESHES.labels(self.source, "failed").inc()
                log.warning("oauth_refresh_failed", source=self.source, **exc.fields())
                if self._state is not None and self._state.access_token and not self.unauthorized:
                    return  # keep using the current token; the next call tries again
                raise
            await self._save(grant, refresh_token)
            return
        assert last is not None
        await self._mark_unauthorized(last)
        raise self._unauthorized_error() from last

    async def _save(self, grant: Grant, sent: str) -> None:
        at = format_ns(self._clock())
        rotated = grant.refresh_token or sent
        await self._store.write(
            lambda conn: stored.save_grant(
                conn,
                self.source,
                access_token=grant.access_token,
                expires_at=grant.expires_at,
                refresh_token=rotated,
                merchant_id=grant.merchant_id,
                refreshed_at=at,
            )
        )
        was_unauthorized = self.unauthorized
        self._state = await self._store.read(lambda conn: stored.load(conn, self.source))
        self._failed_with = frozenset()
        self.refreshes += 1
        OAUTH_REFRESHES.labels(self.source, "ok").inc()
        OAUTH_TOKEN_AGE.labels(self.source).set(0)
        SOURCE_UNAUTHORIZED.labels(self.source).set(0)
        log.info(
            "oauth_token_refreshed",
            source=self.source,
            merchant_id=grant.merchant_id,
            expires_at=grant.expires_at,
            refresh_token_rotated=rotated != sent,
            recovered=was_unauthorized,
        )
        if grant.merchant_id and self._on_merchant is not None:
            self._on_merchant(grant.merchant_id)

    async def _mark_unauthorized(self, exc: OAuthGrantRevoked) -> None:
        at = format_ns(self._clock())
        await self._store.write(
            lambda conn: stored.mark_unauthorized(conn, self.source, exc.message, at)
        )
        self._state = await self._store.read(lambda conn: stored.load(conn, self.source))
        OAUTH_REFRESHES.labels(self.source, "revoked").inc()
        SOURCE_UNAUTHORIZED.labels(self.source).set(1)
        log.error(
            "source_unauthorized",
            source=self.source,
            error=exc.message,
            hint="the seller must authorise the app again; set the new refresh token in the"
            f" config (sources.{self.source}.oauth.refresh_token) and send SIGHUP or restart",
        )

    def _unauthorized_error(self) -> SourceUnauthorized:
        return SourceUnauthorized(
            f"source {self.source} is unauthorized: its OAuth grant was revoked or is invalid",
            op="oauth.refresh",
            hint="the seller must authorise the app again; set a new refresh token",
        )

    def replace_configured(self, refresh_token: str) -> None:
        """A new configured refresh token (SIGHUP): tried at the next refresh."""
        if refresh_token != self._configured:
            self._configured = refresh_token
            self._failed_with = self._failed_with - {refresh_token}
