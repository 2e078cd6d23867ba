"""What the sync engine needs from an upstream: a stream of pages of counts.

The engine owns this Protocol; adapters in ``syncd.upstream`` implement it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from syncd.model import Page


class CountsSource(Protocol):
    """An upstream that can page through inventory counts, newest first."""

    def pages(
        self, *, location_ids: Sequence[str] | None, updated_after: str | None
    ) -> AsyncIterator[Page]:
        """Yield pages for one cursor chain until the upstream says there are no more.

        ``location_ids`` restricts the chain (None = the adapter's own configured filter);
        ``updated_after`` is an RFC 3339 instant (None = full listing). Other filters (states,
        catalog_object_ids, limit) are the adapter's configuration. Raises ``UpstreamError`` once retries
        are exhausted or for a non-retryable answer, ``UpstreamDataError`` for a malformed page.
        """
        ...


class Grant(Protocol):
    """What a token refresh answers (``syncd.upstream.oauth.TokenGrant`` has this shape)."""

    @property
    def access_token(self) -> str: ...

    @property
    def expires_at(self) -> str: ...

    @property
    def merchant_id(self) -> str | None: ...

    @property
    def refresh_token(self) -> str | None: ...


class Refresher(Protocol):
    """Trades a refresh token for a new access token; raises ``OAuthGrantRevoked`` when the
    seller's grant is gone, ``UpstreamError`` for anything else."""

    async def __call__(self, refresh_token: str) -> Grant: ...


class LocationsSource(Protocol):
    """An upstream that lists the seller's active locations."""

    async def active_location_ids(self) -> tuple[str, ...]:
        """The active location ids, in a stable order; raises ``UpstreamError`` when it cannot
        tell (the engine then keeps the partitions it had)."""
        ...
