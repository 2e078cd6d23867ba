"""Sync bookkeeping: one row per (source, partition) in ``sync_state``, one row per pass in ``passes``.

The watermark of a partition moves only when a pass has read that partition's last page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncd.store.rows import fetch_dicts

if TYPE_CHECKING:
    import aiosqlite

PASS_RUNNING = "running"
PASS_OK = "ok"
PASS_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PartitionState:
    """The persisted state of one partition (a cursor chain, e.g. one location)."""

    source: str
    partition: str
    watermark: str | None
    last_outcome: str | None
    last_success_at: str | None
    last_full_at: str | None
    last_finished_at: str | None
    error: str | None


_STATE_COLUMNS = "source, partition, watermark, last_outcome, last_success_at, last_full_at, last_finished_at, error"


async def partitions(conn: aiosqlite.Connection, source: str | None = None) -> list[PartitionState]:
    """Every partition's state (of one source, or all), ordered by source and partition."""
    sql = f"SELECT {_STATE_COLUMNS} FROM sync_state"
    params: tuple[Any, ...] = ()
    if source is not None:
        sql += " WHERE source = ?"
        params = (source,)
    rows = await conn.execute_fetchall(sql + " ORDER BY source, partition", params)
    return [PartitionState(*row) for row in rows]


async def forget_partitions(conn: aiosqlite.Connection, source: str) -> int:
    """Delete every partition state of ``source``; return how many there were. Its passes stay."""
    cursor = await conn.execute("DELETE FROM sync_state WHERE source = ?", (source,))
    return int(cursor.rowcount)


async def begin_pass(conn: aiosqlite.Connection, source: str, kind: str, started_at: str) -> int:
    """Record a pass as running; return its id. Passes left 'running' by a crash stay visible."""
    [row] = await conn.execute_fetchall(
        "INSERT INTO passes (source, kind, started_at) VALUES (?, ?, ?) RETURNING pass_id",
        (source, kind, started_at),
    )
    return int(row[0])


async def finish_pass(
    conn: aiosqlite.Connection,
    pass_id: int | None,
    *,
    source: str,
    kind: str,
    started_at: str,
    outcome: str,
    finished_at: str,
    pages: int,
    counts: int,
    changes: int,
    removed: int,
    error: str | None,
) -> int:
    """Record how a pass ended; return its id. A pass with no row yet (``pass_id`` None: an
    incremental pass that wrote nothing before its end) gets its whole row now."""
    ended = (finished_at, outcome, pages, counts, changes, removed, error)
    if pass_id is None:
        [row] = await conn.execute_fetchall(
            "INSERT INTO passes (source, kind, started_at, finished_at, outcome, pages, counts,"
            " changes, removed, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pass_id",
            (source, kind, started_at, *ended),
        )
        return int(row[0])
    await conn.execute(
        "UPDATE passes SET finished_at = ?, outcome = ?, pages = ?, counts = ?, changes = ?,"
        " removed = ?, error = ? WHERE pass_id = ?",
        (*ended, pass_id),
    )
    return pass_id


_RECORD = (
    "INSERT INTO sync_state (source, partition, watermark, last_pass_id, last_started_at,"
    " last_finished_at, last_outcome, last_success_at, last_full_at, pages, counts_seen, changes,"
    " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (source, partition) DO UPDATE SET watermark = excluded.watermark,"
    " last_pass_id = excluded.last_pass_id, last_started_at = excluded.last_started_at,"
    " last_finished_at = excluded.last_finished_at, last_outcome = excluded.last_outcome,"
    " last_success_at = excluded.last_success_at, last_full_at = excluded.last_full_at,"
    " pages = excluded.pages, counts_seen = excluded.counts_seen, changes = excluded.changes,"
    " error = excluded.error"
)


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """One partition's state after its chain ended, with what the chain did."""

    state: PartitionState
    pages: int
    counts_seen: int
    changes: int


async def record_partitions(
    conn: aiosqlite.Connection,
    records: Sequence[PartitionRecord],
    *,
    pass_id: int,
    started_at: str,
) -> None:
    """Upsert the partitions' states after their chains ended (successfully or not), in one
    statement."""
    await conn.executemany(
        _RECORD,
        [
            (
                r.state.source,
                r.state.partition,
                r.state.watermark,
                pass_id,
                started_at,
                r.state.last_finished_at,
                r.state.last_outcome,
                r.state.last_success_at,
                r.state.last_full_at,
                r.pages,
                r.counts_seen,
                r.changes,
                r.state.error,
            )
            for r in records
        ],
    )


async def last_success_at(conn: aiosqlite.Connection, source: str, *, within: int) -> str | None:
    """When ``source``'s newest successful pass finished, looking at the newest ``within``
    passes (of every source) only, so the read stays bounded however many passes are kept;
    None when there is none there."""
    async with conn.execute(
        "SELECT finished_at FROM passes WHERE pass_id > (SELECT COALESCE(MAX(pass_id), 0)"
        " FROM passes) - ? AND source = ? AND outcome = ? ORDER BY pass_id DESC LIMIT 1",
        (within, source, PASS_OK),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


async def recent_passes(
    conn: aiosqlite.Connection, source: str | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """The newest passes, newest first, as dicts (for status output)."""
    sql = (
        "SELECT pass_id, source, kind, started_at, finished_at, outcome, pages, counts, changes,"
        " removed, error FROM passes"
    )
    params: list[Any] = []
    if source is not None:
        sql += " WHERE source = ?"
        params.append(source)
    sql += " ORDER BY pass_id DESC LIMIT ?"
    params.append(limit)
    return await fetch_dicts(conn, sql, params)
