"""Read-side queries for operators and tools: status figures and mirror listings."""

from __future__ import annotations

from typing import Any

import aiosqlite

from syncd.store import changelog, sync_state
from syncd.store import counts as counts_store


async def status(conn: aiosqlite.Connection) -> dict[str, Any]:
    """Watermarks, recent passes, row and change counts: what `syncd status` shows."""
    async with conn.execute("SELECT COUNT(*) FROM changes") as cur:
        row = await cur.fetchone()
    return {
        "counts": await counts_store.total(conn),
        "changes": {
            "entries": int(row[0]) if row else 0,
            "head_seq": await changelog.head(conn),
            "oldest_seq": await changelog.oldest(conn),
        },
        "partitions": [
            {"source": p.source, "partition": p.partition, "watermark": p.watermark,
             "last_outcome": p.last_outcome, "last_success_at": p.last_success_at,
             "last_full_at": p.last_full_at, "last_finished_at": p.last_finished_at,
             "error": p.error}
            for p in await sync_state.partitions(conn)
        ],
        "recent_passes": await sync_state.recent_passes(conn, limit=5),
    }


async def list_counts(conn: aiosqlite.Connection, *, source: str | None = None,
                      location_id: str | None = None, catalog_object_id: str | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
    """Mirrored counts matching the filters, ordered by key."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("source", source), ("location_id", location_id),
                          ("catalog_object_id", catalog_object_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    sql = ("SELECT source, catalog_object_id, location_id, state, catalog_object_type, quantity,"
           " calculated_at, seq FROM inventory_counts")
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY source, catalog_object_id, location_id, state"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    async with conn.execute(sql, params) as cur:
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) async for row in cur]
