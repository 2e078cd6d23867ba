"""What the sync engine needs from an upstream: pages of counts, pages of catalog objects, the
seller's locations.

The engine owns this Protocol; adapters in ``syncd.upstream`` implement it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from syncd.model import CatalogPage, Location, Page


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

    async def active_location_ids(self, max_age: float = 0.0) -> tuple[str, ...]:
        """The active location ids, in a stable order; raises ``UpstreamError`` when it cannot
        tell (the engine then keeps the partitions it had). An answer the upstream gave less
        than ``max_age`` seconds ago (to another reader of the same locations: the catalog
        pass) may be used instead of asking again."""
        ...

    @property
    def answered_at(self) -> float | None:
        """When (``time.monotonic``) the upstream gave the answer last returned; None before."""
        ...


class LocationDetailsSource(Protocol):
    """An upstream that lists every location of the seller with its details."""

    async def locations(self) -> tuple[Location, ...]:
        """Every location, ACTIVE and INACTIVE, in the upstream's order (id, name, status,
        timezone, merchant id); raises ``UpstreamError`` when it cannot tell."""
        ...


class CatalogSource(Protocol):
    """An upstream that pages through the seller's catalog items and item variations."""

    async def search_catalog(
        self, *, begin_time: str | None, cursor: str | None, limit: int | None = None
    ) -> CatalogPage:
        """One page of ITEM and ITEM_VARIATION objects, deleted ones included.

        ``begin_time`` (RFC 3339, exclusive) asks only for objects changed after it (None: the
        whole catalog); pass the previous chain's ``latest_time``. ``cursor`` continues a chain
        (None: its first page; the other arguments must stay the same along a chain). ``limit``
        is advisory (None: the adapter's default). Raises ``UpstreamError`` once retries are
        exhausted or for a non-retryable answer (``context["cursor_invalid"]`` when the cursor
        was refused: restart the chain), ``UpstreamDataError`` for a malformed page.
        """
        ...
