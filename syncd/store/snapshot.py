"""A consistent snapshot of the mirror at one change-log seq, read in batches with bounded memory.

The snapshot is one read transaction on its own read-only connection (never the store's shared
reader, which a long stream would block): every batch sees the same committed state, and the seq it
is consistent with is the change-log high-water mark inside that transaction, so "the snapshot, then
the entries after its seq" equals the mirror at any later point, while syncd goes on writing. The
record format is in docs/changelog.md ("Snapshot at a seq").
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson

from syncd.timeutil import now_rfc3339

SNAPSHOT_FORMAT = 1
_COUNTS = (
    "SELECT source, catalog_object_id, location_id, state, catalog_object_type, quantity,"
    " calculated_at, seq FROM inventory_counts {where}"
    " ORDER BY source, location_id, catalog_object_id, state"
)


class Snapshot:
    """One snapshot being read: ``seq`` is known once opened; ``lines()`` yields NDJSON lines."""

    def __init__(self, path: Path, *, source: str | None = None, batch: int = 2000) -> None:
        self._path = path
        self._source = source
        self._batch = batch
        self._conn: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None
        self.seq = 0
        self.counts = 0

    async def open(self) -> int:
        """Begin the read transaction; return the seq the snapshot is consistent with."""
        await asyncio.to_thread(self._open)
        return self.seq

    def _open(self) -> None:
        conn = sqlite3.connect(
            f"{self._path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=5,
            check_same_thread=False,  # used from one worker thread at a time, never concurrently
            isolation_level=None,
        )
        try:
            conn.execute("BEGIN")
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
            self.seq = int(row[0]) if row else 0
            where, params = ("WHERE source = ?", (self._source,)) if self._source else ("", ())
            self._cursor = conn.execute(_COUNTS.format(where=where), params)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def header(self) -> bytes:
        """The first line: what the snapshot is and the seq it is consistent with."""
        head = {
            "type": "snapshot",
            "format": SNAPSHOT_FORMAT,
            "seq": self.seq,
            "taken_at": now_rfc3339(),
            "source": self._source,
        }
        return orjson.dumps(head) + b"\n"

    def footer(self) -> bytes:
        """The last line: a reader that does not see it got a truncated snapshot."""
        return orjson.dumps({"type": "end", "seq": self.seq, "counts": self.counts}) + b"\n"

    async def lines(self) -> AsyncIterator[bytes]:
        """The header, one chunk of count lines per batch, then the footer."""
        yield self.header()
        while True:
            chunk = await asyncio.to_thread(self._next_chunk)
            if chunk is None:
                break
            yield chunk
        yield self.footer()

    def _next_chunk(self) -> bytes | None:
        assert self._cursor is not None, "open() first"
        rows = self._cursor.fetchmany(self._batch)
        if not rows:
            return None
        self.counts += len(rows)
        return b"".join(_count_line(row) for row in rows)

    def close(self) -> None:
        """End the read transaction (nothing was written) and close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _count_line(row: tuple[str, str, str, str, str | None, str, str, int]) -> bytes:
    source, obj, loc, state, obj_type, quantity, calculated_at, seq = row
    record = {
        "type": "count",
        "source": source,
        "catalog_object_id": obj,
        "location_id": loc,
        "state": state,
        "quantity": quantity,
        "calculated_at": calculated_at,
        "catalog_object_type": obj_type,
        "seq": seq,
    }
    return orjson.dumps(record) + b"\n"


def iter_snapshot(path: Path, *, source: str | None = None) -> Iterator[bytes]:
    """The same snapshot, synchronously (``syncd snapshot``): header, count lines, footer."""
    snap = Snapshot(path, source=source)
    snap._open()
    try:
        yield snap.header()
        while (chunk := snap._next_chunk()) is not None:
            yield chunk
        yield snap.footer()
    finally:
        snap.close()
