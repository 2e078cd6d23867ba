"""Reading a cursor chain one page ahead, for the counts and the catalog engines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol, TypeVar


class _Paged(Protocol):
    @property
    def cursor(self) -> str | None: ...  # None on the chain's last page


P = TypeVar("P", bound=_Paged)  # a page of any upstream


async def prefetch(pages: AsyncIterator[P]) -> AsyncIterator[P]:
    """Yield ``pages`` in order while fetching the next one in the background.

    The next page's HTTP round trip and JSON parsing overlap the current page's SQLite transaction
    (which runs in the database thread), so neither waits for the other. At most two pages per chain
    are in memory. An upstream error surfaces when the page that failed would have been yielded.

    The first page is read in the caller's task (there is nothing yet to overlap it with), and
    nothing is fetched after a page with no cursor (the chain's last): a chain of one page, the
    usual answer of an idle incremental pass, costs no task and no extra turn of the event loop
    (issue 11).
    """
    iterator = aiter(pages)
    pending: asyncio.Task[P] | None = None
    try:
        try:
            page = await anext(iterator)
        except StopAsyncIteration:
            return
        while True:
            if page.cursor is None:
                yield page
                return
            pending = asyncio.ensure_future(anext(iterator))
            yield page
            try:
                page = await pending
            except StopAsyncIteration:
                return
            pending = None
    finally:
        if pending is not None:
            # Cancel a fetch still running; a finished one is awaited too, so that its outcome
            # (often StopAsyncIteration) is retrieved, not logged as "never retrieved".
            if not pending.done():
                pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
