"""The Store facade: open -> migrate -> one writer + one reader; close is idempotent.

Everything that touches SQLite lives under ``syncd.store``; the rest of syncd calls the functions in its
modules (counts, changelog, sync_state, ...) through ``Store.write`` and ``Store.read``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from syncd.errors import StoreClosed
from syncd.store.migrations import migrate
from syncd.store.sqlite import Writer, connect_reader, connect_writer

T = TypeVar("T")


class Store:
    """The daemon's database: a single writer plus a reader connection for queries."""

    def __init__(self, path: Path, writer: Writer | None, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._read_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, readonly: bool = False) -> Store:
        """Open (creating and migrating unless ``readonly``)."""
        if readonly:
            return cls(path, None, await connect_reader(path))
        conn = await connect_writer(path)
        try:
            await migrate(conn)
            reader = await connect_reader(path)
        except BaseException:
            await conn.close()
            raise
        return cls(path, Writer(conn), reader)

    @property
    def readonly(self) -> bool:
        return self._writer is None

    async def write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run one unit of work in one IMMEDIATE transaction (see Writer.run)."""
        if self._writer is None:
            raise StoreClosed("store was opened read-only", op="store.write")
        return await self._writer.run(work)

    async def read(self, query: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run a query on the reader connection inside one read transaction (a consistent snapshot)."""
        if self._closed:
            raise StoreClosed("store is closed", op="store.read")
        async with self._read_lock:
            await self._reader.execute("BEGIN")
            try:
                return await query(self._reader)
            finally:
                await self._reader.execute("COMMIT")

    async def aclose(self) -> None:
        """Finish the write in progress and close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._writer.aclose()
        await self._reader.close()
