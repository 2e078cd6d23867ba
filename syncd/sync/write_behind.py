"""A full chain's pages on their way to the store, written behind the reading (issues 12, 13)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from syncd.errors import SyncdError

P = TypeVar("P")


class WriteBehind(Generic[P]):
    """The batch being read, and at most one batch being written meanwhile, in a task of its own,
    so reading and parsing go on while it commits. A batch is written once it holds ``limit``
    records, as ``size`` counts them in each page.

    Used as ``async with``: leaving the block normally or by a ``SyncdError`` (an upstream
    failure) writes what was read and waits for it, so the pages read before a failure are kept,
    as they were when each page had its own transaction; leaving by anything else (cancellation)
    waits for the write in flight only (the writer finishes a started commit regardless).
    """

    def __init__(
        self,
        apply: Callable[[list[P]], Awaitable[None]],
        limit: int,
        size: Callable[[P], int] = len,  # type: ignore[assignment]
    ) -> None:
        self._apply = apply
        self._limit = limit
        self._size = size
        self._batch: list[P] = []
        self._batched = 0
        self._writing: asyncio.Future[None] | None = None

    async def __aenter__(self) -> WriteBehind[P]:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None or issubclass(kind, SyncdError):
            await self._flush()
            await self._wait()
        elif self._writing is not None:
            await asyncio.wait([self._writing])
            if not self._writing.cancelled():
                self._writing.exception()  # retrieved: the error that left the block wins

    async def add(self, page: P) -> None:
        """Batch ``page``; once the batch holds enough records, start writing it."""
        self._batch.append(page)
        self._batched += self._size(page)
        if self._batched >= self._limit:
            await self._flush()

    async def _flush(self) -> None:
        """Wait for the batch in flight (its error surfaces here), then start writing the one
        read since."""
        await self._wait()
        if self._batch:
            pages, self._batch, self._batched = self._batch, [], 0
            self._writing = asyncio.ensure_future(self._apply(pages))

    async def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing
