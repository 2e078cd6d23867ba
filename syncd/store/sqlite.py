"""SQLite connections: the single writer (WAL, synchronous=FULL) and read-only readers.

One writer connection serves the whole daemon. Units of work are async functions run inside
``BEGIN IMMEDIATE`` ... ``COMMIT`` under one asyncio lock, and shielded from cancellation so a commit is
never split: cancellation lands between units, never inside one. Readers open ``mode=ro`` connections and
never block the writer (WAL), and the writer never blocks them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from syncd.errors import StoreClosed, StoreError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000

WRITER_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    # FULL: a seq a consumer has read must survive power loss (docs/schema.md). Speed comes from
    # batching a whole page into one transaction instead.
    "PRAGMA synchronous = FULL",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -16000",
)


async def connect_writer(path: Path) -> aiosqlite.Connection:
    """Open the read-write connection with the durability settings syncd promises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        for pragma in WRITER_PRAGMAS:
            await conn.execute(pragma)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database: {exc}", op="store.open", path=str(path)) from exc
    return conn


async def connect_reader(path: Path) -> aiosqlite.Connection:
    """Open a read-only connection (``mode=ro``), as any other tool on the host would."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot open database read-only: {exc}", op="store.open_ro", path=str(path),
            hint="is the path right, and has syncd created it yet?",
        ) from exc
    return conn


class Writer:
    """The single writer: serialises units of work, each in one IMMEDIATE transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._closed:
            raise StoreClosed("store is closed", op="store.write")
        return self._conn

    async def run(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction; commit, or roll back and re-raise. Cancellation-proof.

        If the caller is cancelled while the unit runs, the unit still finishes (commit or rollback),
        and then the cancellation propagates.
        """
        conn = self.conn
        task = asyncio.ensure_future(self._transaction(conn, work))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait([task])
            raise

    async def _transaction(self, conn: aiosqlite.Connection,
                           work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._lock:
            if self._closed:
                raise StoreClosed("store is closed", op="store.write")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                result = await work(conn)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            return result

    async def aclose(self) -> None:
        """Wait for the unit in progress, then close. Idempotent."""
        if self._closed:
            return
        async with self._lock:
            self._closed = True
            await self._conn.close()
