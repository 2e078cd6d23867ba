"""The change log (table ``changes``): the only code that inserts into it, and the ways to read it.

Sequence numbers are allocated here, explicitly, inside the caller's write transaction: the writer holds
the database's write lock, so ``head + 1 .. head + n`` are ours, and the AUTOINCREMENT high-water mark
(``sqlite_sequence``) guarantees a seq is never reused, even after the newest entries are pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from syncd.model import Change


@dataclass(frozen=True, slots=True)
class NewChange:
    """An entry to append; ``old``/``new`` are JSON-able dicts (None for 'did not exist')."""

    kind: str
    source: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    catalog_object_id: str | None = None
    location_id: str | None = None
    state: str | None = None
    job_id: int | None = None


_INSERT = (
    "INSERT INTO changes (seq, recorded_at, kind, source, catalog_object_id, location_id, state,"
    " job_id, old, new) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "seq, recorded_at, kind, source, catalog_object_id, location_id, state, job_id, old, new"


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def high_water(conn: aiosqlite.Connection) -> int:
    """The largest seq ever allocated (0 if none), pruned entries included."""
    async with conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def append(conn: aiosqlite.Connection, entries: Sequence[NewChange],
                 recorded_at: str) -> list[int]:
    """Append entries in order inside the current transaction; return their seqs."""
    if not entries:
        return []
    base = await high_water(conn)
    seqs = list(range(base + 1, base + 1 + len(entries)))
    await conn.executemany(
        _INSERT,
        [
            (seq, recorded_at, e.kind, e.source, e.catalog_object_id, e.location_id, e.state,
             e.job_id, _json(e.old), _json(e.new))
            for seq, e in zip(seqs, entries, strict=True)
        ],
    )
    return seqs


def _row_to_change(row: Sequence[Any]) -> Change:
    return Change(
        seq=row[0], recorded_at=row[1], kind=row[2], source=row[3], catalog_object_id=row[4],
        location_id=row[5], state=row[6], job_id=row[7],
        old=orjson.loads(row[8]) if row[8] is not None else None,
        new=orjson.loads(row[9]) if row[9] is not None else None,
    )


async def read_after(conn: aiosqlite.Connection, after: int, limit: int) -> list[Change]:
    """Up to ``limit`` entries with seq > ``after``, in seq order."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ) as cur:
        rows = await cur.fetchall()
    return [_row_to_change(r) for r in rows]


async def head(conn: aiosqlite.Connection) -> int:
    """The newest seq present (0 if the log is empty)."""
    async with conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def oldest(conn: aiosqlite.Connection) -> int | None:
    """The oldest seq still kept, or None if the log is empty."""
    async with conn.execute("SELECT MIN(seq) FROM changes") as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])
