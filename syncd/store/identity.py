"""This database's identity (table ``database_info``, schema 8): a random id made by the migration
that created the table, never changed. A copy of the file (a backup, restored) keeps it; a new
database gets a new one. The publish relay claims its stream with it (issue 11)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite


async def database_id(conn: aiosqlite.Connection) -> str | None:
    """The database's id; None on a database that predates schema 8 (read-only, not migrated)."""
    async with conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'database_info'"
    ) as cur:
        if await cur.fetchone() is None:
            return None
    async with conn.execute("SELECT database_id FROM database_info WHERE one = 1") as cur:
        row = await cur.fetchone()
    return None if row is None else str(row[0])
