"""The sources this database has seen (table ``sources``, contract), and forgetting one.

A source is one upstream seller. The daemon registers each configured source at start (with its
merchant id once known) and marks the ones the config no longer has as removed: their mirror rows,
change-log entries and state stay until an operator forgets the source, so ``status`` can list
them and webhook routing can map a merchant to its source after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncd.errors import UnknownSource
from syncd.store import catalog, changelog, counts, credentials, inbox, sync_state

if TYPE_CHECKING:
    import aiosqlite


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


async def known(conn: aiosqlite.Connection, source: str) -> bool:
    """Whether the database holds anything of ``source`` that forgetting it would remove: its
    ``sources`` row, mirror rows, partition states or OAuth state. (Its passes and change-log
    entries are history and stay after forgetting, so they do not count.)"""
    async with conn.execute(
        "SELECT EXISTS (SELECT 1 FROM sources WHERE source = :s)"
        " OR EXISTS (SELECT 1 FROM inventory_counts WHERE source = :s)"
        " OR EXISTS (SELECT 1 FROM sync_state WHERE source = :s)"
        " OR EXISTS (SELECT 1 FROM source_credentials WHERE source = :s)",
        {"s": source},
    ) as cur:
        row = await cur.fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What forgetting a source removed. ``entries`` ``count.removed`` entries were written, one
    per mirror row, then ``catalog_entries`` ``catalog.removed`` / ``location.removed`` ones, one
    per catalog item, variation and location, with seqs ``first_seq .. last_seq`` (None when it
    had no rows)."""

    source: str
    entries: int
    catalog_entries: int
    first_seq: int | None
    last_seq: int | None
    partitions: int
    webhook_events: int
    credentials: bool

    def to_record(self) -> dict[str, object]:
        return {
            "source": self.source,
            "entries": self.entries,
            "catalog_entries": self.catalog_entries,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "partitions": self.partitions,
            "webhook_events": self.webhook_events,
            "credentials": self.credentials,
        }


async def forget(
    conn: aiosqlite.Connection,
    source: str,
    *,
    recorded_at: str,
    chunk: int = counts.FORGET_CHUNK,
) -> Forgotten:
    """Forget ``source`` inside the caller's transaction; :class:`UnknownSource` when the
    database has nothing of it (never synced, or forgotten already: nothing is written).

    Each mirrored row is removed with a ``count.removed`` entry (``chunk`` rows at a time: see
    ``counts.remove_source``), and each catalog item, variation and location with a
    ``catalog.removed`` / ``location.removed`` one (``catalog.remove_source``), so replaying the
    change log still yields the mirror and the catalog tables. Its catalog state, partition states, OAuth state, webhook inbox rows and ``sources`` row go too. Its earlier
    change-log entries and its passes stay: the log is append-only history.
    """
    if not await known(conn, source):
        raise UnknownSource(
            f"unknown source {source!r}: the database has no source of that name"
            " (never synced, or already forgotten)",
            op="sources.forget",
            hint="`syncd sources list` shows the sources the database knows",
            source=source,
        )
    before = await changelog.high_water(conn)
    removed = await counts.remove_source(conn, source, recorded_at=recorded_at, chunk=chunk)
    catalog_rows = await catalog.remove_source(conn, source, recorded_at=recorded_at)
    written = removed + catalog_rows
    partitions = await sync_state.forget_partitions(conn, source)
    had_credentials = await credentials.delete(conn, source)
    events = await inbox.delete_source(conn, source)
    await conn.execute("DELETE FROM sources WHERE source = ?", (source,))
    return Forgotten(
        source=source,
        entries=removed,
        catalog_entries=catalog_rows,
        first_seq=before + 1 if written else None,
        last_seq=before + written if written else None,
        partitions=partitions,
        webhook_events=events,
        credentials=had_credentials,
    )


async def forget_source(
    conn: aiosqlite.Connection,
    source: str,
    *,
    recorded_at: str,
    chunk: int = counts.FORGET_CHUNK,
) -> int:
    """:func:`forget`, returning how many mirror rows it removed (0 for an unknown source)."""
    try:
        forgotten = await forget(conn, source, recorded_at=recorded_at, chunk=chunk)
    except UnknownSource:
        return 0
    return forgotten.entries
