"""Connections, migrations and the single-writer unit of work."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from syncd.errors import SchemaTooNew, StoreClosed
from syncd.store import Store
from syncd.store.migrations import SCHEMA_VERSION


async def test_open_sets_wal_full_and_schema_version(store: Store, db_path: Path) -> None:
    """The database is in WAL mode with synchronous=FULL on the writer and the current schema."""
    async with store._writer.conn.execute("PRAGMA synchronous") as cur:  # type: ignore[union-attr]
        assert (await cur.fetchone()) == (2,)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        conn.close()


async def test_reopen_is_idempotent(db_path: Path) -> None:
    """Opening an up-to-date database runs no migration and keeps the data."""
    store = await Store.open(db_path)
    await store.write(
        lambda c: c.execute(
            "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', 'x')"
        )
    )
    await store.aclose()
    store = await Store.open(db_path)
    rows = await store.read(lambda c: c.execute_fetchall("SELECT COUNT(*) FROM passes"))
    assert list(rows) == [(1,)]
    await store.aclose()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    """A database written by a newer syncd is refused with a typed error and a hint."""
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        await Store.open(db_path)
    assert info.value.hint


async def test_readonly_store_cannot_write(store: Store, db_path: Path) -> None:
    """A read-only store opened like another tool's reader refuses writes."""
    reader = await Store.open(db_path, readonly=True)
    try:
        with pytest.raises(StoreClosed):
            await reader.write(lambda c: c.execute("DELETE FROM changes"))
        with pytest.raises(sqlite3.OperationalError):
            await reader.read(lambda c: c.execute("DELETE FROM changes"))
    finally:
        await reader.aclose()


async def test_close_is_idempotent_and_later_use_is_typed(db_path: Path) -> None:
    """aclose() twice is fine; using a closed store raises StoreClosed."""
    store = await Store.open(db_path)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreClosed):
        await store.write(lambda c: c.execute("SELECT 1"))
    with pytest.raises(StoreClosed):
        await store.read(lambda c: c.execute("SELECT 1"))


async def test_cancellation_does_not_split_a_unit_of_work(store: Store, db_path: Path) -> None:
    """Cancelling the caller mid-unit lets the unit commit whole; the caller still sees the cancel."""
    started = asyncio.Event()

    async def work(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', 'a')"
        )
        started.set()
        await asyncio.sleep(0.05)
        await conn.execute(
            "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', 'b')"
        )

    task = asyncio.create_task(store.write(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await store.read(lambda c: c.execute_fetchall("SELECT started_at FROM passes"))
    assert sorted(r[0] for r in rows) == ["a", "b"]
