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
