"""The Store: open -> migrate -> one writer + one reader; close is idempotent.

Everything that touches SQLite lives under ``syncd.store``; the rest of syncd calls the functions in its
modules (counts, changelog, sync_state, ...) through ``Store.write`` and ``Store.read``. It is
``syncd.store.Store``; this module is imported on first use of that name (see the package).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import aiosqlite

from syncd.errors import StoreClosed
from syncd.metrics import CHANGELOG_HEAD, CHANGES_WRITTEN, child
from syncd.store import changelog, inline
from syncd.store.changelog import HeadSignal
from syncd.store.migrations import migrate
from syncd.store.sqlite import Unit, Writer, connect_reader, connect_writer, on_thread

T = TypeVar("T")


class Store:
    """The daemon's database: a single writer plus a reader connection for queries."""

    def __init__(
        self,
        path: Path,
        writer: Writer | None,
        reader: aiosqlite.Connection,
        *,
        changelog_head: HeadSignal | None = None,
    ) -> None:
        self.path = path
        # Moved by this store's own commits only (a read-only store never sees it move).
        self.changelog_head = changelog_head or HeadSignal()
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
            head = HeadSignal(await changelog.high_water(conn))
            reader = await connect_reader(path)
        except BaseException:
            await conn.close()
            raise
        CHANGELOG_HEAD.set(head.head)
        return cls(path, Writer(conn, on_commit=_announce(head)), reader, changelog_head=head)

    @property
    def readonly(self) -> bool:
        return self._writer is None

    @property
    def closed(self) -> bool:
        """True once ``aclose`` has been called."""
        return self._closed

    async def write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run one unit of work in one IMMEDIATE transaction (see Writer.run)."""
        if self._writer is None:
            raise StoreClosed("store was opened read-only", op="store.write")
        return await self._writer.run(work)

    async def write_statement(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one statement as its own transaction; return the rows it changed (see
        Writer.run_statement)."""
        if self._writer is None:
            raise StoreClosed("store was opened read-only", op="store.write")
        return await self._writer.run_statement(sql, params)

    async def queue_write(self, job: Callable[[sqlite3.Connection], object]) -> None:
        """Queue ``job(db)`` on the writer's thread, in autocommit mode, and return once queued
        (see Writer.queue)."""
        if self._writer is None:
            raise StoreClosed("store was opened read-only", op="store.write")
        await self._writer.queue(job)

    async def read(self, query: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run a query on the reader connection inside one read transaction (a consistent snapshot)."""
        if self._closed:
            raise StoreClosed("store is closed", op="store.read")
        async with self._read_lock:
            try:
                # BEGIN inside the try: a caller cancelled while awaiting it has still queued it on
                # the connection's thread, and without the COMMIT below the reader would stay in
                # that transaction for good ("cannot start a transaction within a transaction" on
                # every later read; seen with the publish relay, issue 7).
                await self._reader.execute("BEGIN")
                return await query(self._reader)
            finally:
                await self._reader.execute("COMMIT")

    async def write_inline(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """``write`` for a unit that awaits nothing but its connection: the whole unit in one trip
        to the connection's thread (see Writer.run_inline)."""
        if self._writer is None:
            raise StoreClosed("store was opened read-only", op="store.write")
        return await self._writer.run_inline(work)

    async def read_inline(self, query: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """``read`` for a query that awaits nothing but its connection: the read transaction and
        the query in one trip to the reader's thread (``syncd.store.inline``)."""
        if self._closed:
            raise StoreClosed("store is closed", op="store.read")
        async with self._read_lock:
            return await on_thread(self._reader, partial(inline.read, query))

    async def aclose(self) -> None:
        """Finish the read and the write in progress and close both connections. Idempotent.

        The reader goes first: the writer, closing last, checkpoints the WAL and removes it, so a
        clean stop leaves just the database file.
        """
        if self._closed:
            return
        self._closed = True
        async with self._read_lock:
            await self._reader.close()
        if self._writer is not None:
            await self._writer.aclose()


def _announce(head: HeadSignal) -> Callable[[Unit], None]:
    """After a commit that appended change-log entries: wake waiters, count the entries."""

    def committed(unit: Unit) -> None:
        if unit.changelog_head is None:
            return
        head.publish(unit.changelog_head)
        CHANGELOG_HEAD.set(unit.changelog_head)
        for (source, kind), n in unit.changes_by_kind.items():
            child(CHANGES_WRITTEN, source, kind).inc(n)

    return committed
