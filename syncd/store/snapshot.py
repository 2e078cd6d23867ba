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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from syncd.store.catalog import ItemRow, LocationRow, VariationRow
from syncd.timeutil import now_rfc3339

# 2: location and catalog lines after the count lines (the catalog mirror, issue 12).
SNAPSHOT_FORMAT = 2
_COUNTS = (
    "SELECT source, catalog_object_id, location_id, state, catalog_object_type, quantity,"
    " calculated_at, seq FROM inventory_counts {where}"
    " ORDER BY source, location_id, catalog_object_id, state"
)
_LOCATIONS = (
    "SELECT source, location_id, name, status, timezone, seq FROM locations {where}"
    " ORDER BY source, location_id"
)
_ITEMS = (
    "SELECT source, item_id, name, is_deleted, seq FROM catalog_items {where}"
    " ORDER BY source, item_id"
)
_VARIATIONS = (
    "SELECT source, variation_id, item_id, name, sku, gtin, measurement_unit_id, track_inventory,"
    " is_deleted, seq FROM catalog_variations {where} ORDER BY source, variation_id"
)


class Snapshot:
    """One snapshot being read: ``seq`` is known once opened; ``lines()`` yields NDJSON lines."""

    def __init__(self, path: Path, *, source: str | None = None, batch: int = 2000) -> None:
        self._path = path
        self._source = source
        self._batch = batch
        self._conn: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None
        self._line: Callable[[Any], bytes] = _count_line
        self._tally_key = "counts"
        self._parts: list[tuple[str, Callable[[Any], bytes], str]] = []
        self.seq = 0
        self.tally = {"counts": 0, "locations": 0, "catalog": 0}

    @property
    def counts(self) -> int:
        return self.tally["counts"]

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
            self._conn = conn
            self._parts = [
                (_COUNTS, _count_line, "counts"),
                (_LOCATIONS, _location_line, "locations"),
                (_ITEMS, _item_line, "catalog"),
                (_VARIATIONS, _variation_line, "catalog"),
            ]
            self._next_part()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def _next_part(self) -> bool:
        """Start the next table's query in the same read transaction; False after the last."""
        assert self._conn is not None
        if not self._parts:
            self._cursor = None
            return False
        sql, self._line, self._tally_key = self._parts.pop(0)
        where, params = ("WHERE source = ?", (self._source,)) if self._source else ("", ())
        self._cursor = self._conn.execute(sql.format(where=where), params)
        return True

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
        return orjson.dumps({"type": "end", "seq": self.seq, **self.tally}) + b"\n"

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
        """The next batch of lines: counts, then locations, then catalog objects."""
        assert self._conn is not None, "open() first"
        while self._cursor is not None:
            rows = self._cursor.fetchmany(self._batch)
            if rows:
                self.tally[self._tally_key] += len(rows)
                return b"".join(self._line(row) for row in rows)
            self._next_part()
        return None

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


def _location_line(row: tuple[Any, ...]) -> bytes:
    source, location_id, name, status, timezone, seq = row
    value = LocationRow(location_id, name, status, timezone).value()
    record = {"type": "location", "source": source, "location_id": location_id, "value": value}
    return orjson.dumps({**record, "seq": seq}) + b"\n"


def _item_line(row: tuple[Any, ...]) -> bytes:
    source, item_id, name, is_deleted, seq = row
    value = ItemRow(item_id, name, bool(is_deleted), 0, "").value()
    return _catalog_line(source, item_id, value, seq)


def _variation_line(row: tuple[Any, ...]) -> bytes:
    source, variation_id, item_id, name, sku, gtin, unit, track, is_deleted, seq = row
    track_inventory = None if track is None else bool(track)
    value = VariationRow(
        variation_id, item_id, name, sku, gtin, unit, track_inventory, bool(is_deleted), 0, ""
    ).value()
    return _catalog_line(source, variation_id, value, seq)


def _catalog_line(source: str, object_id: str, value: dict[str, Any], seq: int) -> bytes:
    record = {"type": "catalog", "source": source, "object_id": object_id, "value": value}
    return orjson.dumps({**record, "seq": seq}) + b"\n"


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
