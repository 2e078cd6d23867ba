"""Rows as records, on any connection the store's query functions run on: an aiosqlite one
(``Store``) or the loop-free read-only one (``syncd.store.readonly``). Nothing here opens a
connection or needs an event loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiosqlite


async def fetch_dicts(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Every row of ``sql`` as a dict keyed by column name, fetched in one thread hop (iterating an
    aiosqlite cursor costs one hop per row)."""
    async with conn.execute(sql, params) as cur:
        cols = [d[0] for d in cur.description]
        rows = await cur.fetchall()
    return [dict(zip(cols, row, strict=True)) for row in rows]
