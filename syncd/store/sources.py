"""The sources this database has seen (table ``sources``, contract), and forgetting one.

A source is one upstream seller. The daemon registers each configured source at start (with its
merchant id once known) and marks the ones the config no longer has as removed: their mirror rows,
change-log entries and state stay until an operator forgets the source, so ``status`` can list
them and webhook routing can map a merchant to its source after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from syncd.store import counts, credentials, sync_state


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One row of ``sources``; ``removed_at`` is None while the config has the source."""

    source: str
    merchant_id: str | None
    added_at: str
    removed_at: str | None


async def register(
    conn: aiosqlite.Connection, source: str, merchant_id: str | None, at: str
) -> None:
    """Record ``source`` as configured: added at ``at`` the first time, and no longer removed.

    ``merchant_id`` None keeps the stored one (it is known only once the upstream has answered);
    ``added_at`` keeps the first registration's time.
    """
    await conn.execute(
        "INSERT INTO sources (source, merchant_id, added_at, removed_at) VALUES (?, ?, ?, NULL)"
        " ON CONFLICT (source) DO UPDATE SET"
        " merchant_id = COALESCE(excluded.merchant_id, sources.merchant_id), removed_at = NULL",
        (source, merchant_id, at),
    )


async def mark_removed(conn: aiosqlite.Connection, source: str, at: str) -> bool:
    """Record that the config no longer has ``source``; True if that changed anything (a source
    already marked keeps its first removal time; an unknown one is ignored)."""
    cursor = await conn.execute(
        "UPDATE sources SET removed_at = ? WHERE source = ? AND removed_at IS NULL", (at, source)
    )
    return cursor.rowcount > 0


async def list_sources(conn: aiosqlite.Connection) -> list[SourceRecord]:
    """Every source seen, removed ones included, by name."""
    async with conn.execute(
        "SELECT source, merchant_id, added_at, removed_at FROM sources ORDER BY source"
    ) as cur:
        rows = await cur.fetchall()
    return [SourceRecord(*row) for row in rows]


async def merchant_map(conn: aiosqlite.Connection) -> dict[str, str]:
    """merchant_id -> source for the configured (not removed) sources whose merchant is known.

    Should two sources name the same merchant, the first by name wins (the config is meant to
    prevent that; a removed source never takes a merchant from a configured one).
    """
    async with conn.execute(
        "SELECT merchant_id, source FROM sources WHERE merchant_id IS NOT NULL"
        " AND removed_at IS NULL ORDER BY source DESC"
    ) as cur:
        rows = await cur.fetchall()
    return {str(merchant): str(source) for merchant, source in rows}


async def forget_source(
    conn: aiosqlite.Connection,
    source: str,
    *,
    recorded_at: str,
    chunk: int = counts.FORGET_CHUNK,
) -> int:
    """Forget ``source`` inside the caller's transaction; return how many mirror rows it removed.

    Each mirrored row is removed with a ``count.removed`` entry (``chunk`` rows at a time: see
    ``counts.remove_source``), so replaying the change log still yields the mirror. Its
    partition states, OAuth state and ``sources`` row go too. Its change-log entries and passes
    stay: the log is append-only history.
    """
    removed = await counts.remove_source(conn, source, recorded_at=recorded_at, chunk=chunk)
    await sync_state.forget_partitions(conn, source)
    await credentials.delete(conn, source)
    await conn.execute("DELETE FROM sources WHERE source = ?", (source,))
    return removed
