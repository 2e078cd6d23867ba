"""The publish outbox: change-log entries as raw rows for a relay, and each target's published offset
(table ``publish_offsets``).

The change log is the outbox (issue 7): a relay reads entries after its offset and hands them to a
stream. Rows come back undecoded (``old``/``new`` stay JSON text), so a relay can embed them in its
messages without parsing and re-encoding a million payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import aiosqlite


class RawChange(NamedTuple):
    """One change-log entry as stored: ``old`` and ``new`` are JSON text (or None)."""

    seq: int
    recorded_at: str
    kind: str
    source: str
    catalog_object_id: str | None
    location_id: str | None
    state: str | None
    job_id: int | None
    old: str | None
    new: str | None
    sku: str | None


_SELECT = (
    "SELECT seq, recorded_at, kind, source, catalog_object_id, location_id, state, job_id, old, new,"
    " sku FROM changes WHERE seq > ? ORDER BY seq LIMIT ?"
)


async def read_after(conn: aiosqlite.Connection, after: int, limit: int) -> list[RawChange]:
    """Up to ``limit`` entries with seq > ``after``, in seq order, undecoded.

    Seqs are contiguous but for the front, where retention pruned: a first seq other than
    ``after + 1`` means the entries in between are gone.
    """
    async with conn.execute(_SELECT, (after, limit)) as cur:
        rows = await cur.fetchall()
    return [RawChange._make(r) for r in rows]


async def published(conn: aiosqlite.Connection, target: str, stream: str) -> int | None:
    """The target's published offset for ``stream``, or None if it never published there."""
    async with conn.execute(
        "SELECT published_seq FROM publish_offsets WHERE target = ? AND stream = ?",
        (target, stream),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def record(conn: aiosqlite.Connection, target: str, stream: str, seq: int, at: str) -> None:
    """Set the target's published offset for ``stream`` (inside the caller's transaction)."""
    await conn.execute(
        "INSERT INTO publish_offsets (target, stream, published_seq, updated_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (target, stream) DO UPDATE SET"
        " published_seq = excluded.published_seq, updated_at = excluded.updated_at",
        (target, stream, seq, at),
    )


async def refused(conn: aiosqlite.Connection, target: str, stream: str) -> str | None:
    """Why the target refuses ``stream``, as last recorded; None while it publishes."""
    async with conn.execute(
        "SELECT refused FROM publish_offsets WHERE target = ? AND stream = ?", (target, stream)
    ) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


async def record_refused(
    conn: aiosqlite.Connection, target: str, stream: str, seq: int, refused: str | None, at: str
) -> None:
    """Set (or, with None, clear) why the target refuses ``stream`` (issue 11); a stream without a
    row gets one at ``seq``. The offset and its time stay as they were."""
    await conn.execute(
        "INSERT INTO publish_offsets (target, stream, published_seq, updated_at, refused)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (target, stream) DO UPDATE SET"
        " refused = excluded.refused",
        (target, stream, seq, at, refused),
    )


async def all_offsets(conn: aiosqlite.Connection) -> list[dict[str, Any]]:
    """Every target's offset per stream, and why it refuses the stream if it does (empty on a
    database that predates the table; ``refused`` None before schema 8)."""
    async with conn.execute("SELECT name FROM pragma_table_info('publish_offsets')") as cur:
        columns = {r[0] for r in await cur.fetchall()}
    if not columns:
        return []
    refused = "refused" if "refused" in columns else "NULL"
    async with conn.execute(
        f"SELECT target, stream, published_seq, updated_at, {refused} FROM publish_offsets"
        " ORDER BY target, stream"
    ) as cur:
        rows = await cur.fetchall()
    return [
        {
            "target": r[0],
            "stream": r[1],
            "published_seq": int(r[2]),
            "updated_at": r[3],
            "refused": r[4],
        }
        for r in rows
    ]
