"""The mirror (table ``inventory_counts``): applying pages of upstream counts and recording changes.

Rules (docs/schema.md): a change entry exists exactly when a stored value changes; values are compared as
values (quantity as a decimal, calculated_at as an instant), so "10" vs "10.0" or "Z" vs "+00:00" is no
change; a count older than the stored one never overwrites it; first sight is a change with old = null;
a count that vanished upstream is removed with a ``count.removed`` entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from syncd.errors import StoreError
from syncd.model import InventoryCount, parse_quantity
from syncd.store import changelog
from syncd.store.catalog import variation_skus
from syncd.store.changelog import NewChange
from syncd.timeutil import parse_ns

if TYPE_CHECKING:
    import aiosqlite

KIND_UPDATED = "count.updated"
KIND_REMOVED = "count.removed"

PassStamp = Callable[[], Awaitable[int]]
"""Gives the id of the pass applying a page, writing the pass's row first if need be."""

_UPSERT = (
    "INSERT INTO inventory_counts (source, catalog_object_id, location_id, state,"
    " catalog_object_type, quantity, calculated_at, seq, seen_pass) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (source, location_id, catalog_object_id, state) DO UPDATE SET"
    " catalog_object_type = excluded.catalog_object_type, quantity = excluded.quantity,"
    " calculated_at = excluded.calculated_at, seq = excluded.seq, seen_pass = excluded.seen_pass"
)
# The webhook fast path's upsert: a row it updates keeps the ``seen_pass`` a running full pass gave it
# (``excluded.seen_pass`` 0 means "no full pass is running"), so the fast path can never make that
# pass take a live row for one that vanished upstream.
_KEEP_SEEN = (
    "seen_pass = CASE excluded.seen_pass WHEN 0 THEN inventory_counts.seen_pass"
    " ELSE excluded.seen_pass END"
)
_UPSERT_KEEP_SEEN = _UPSERT.replace("seen_pass = excluded.seen_pass", _KEEP_SEEN)
_MARK_SEEN = (
    "UPDATE inventory_counts SET seen_pass = ? WHERE source = ? AND catalog_object_id = ?"
    " AND location_id = ? AND state = ?"
)

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Stored:
    """A mirrored row as stored (strings exactly as the upstream sent them)."""

    catalog_object_type: str | None
    quantity: str
    calculated_at: str

    def value(self) -> dict[str, Any]:
        return _value(self.quantity, self.calculated_at, self.catalog_object_type)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one page did."""

    changes: int
    unchanged: int
    stale: int
    last_seq: int | None
    unknown: int = 0  # with ``known_only``: counts the mirror did not hold, left alone
    written: Sequence[InventoryCount] = ()  # the counts that changed, one per change entry
    first_sight: int = 0  # of ``changes``: counts the mirror did not hold before

    @property
    def all_new(self) -> bool:
        """Whether every count of the page was one the mirror did not hold."""
        return self.first_sight == self.changes + self.unchanged + self.stale + self.unknown


def _value(quantity: str, calculated_at: str, object_type: str | None) -> dict[str, Any]:
    """A count's value as the change log records it (docs/changelog.md), old and new alike."""
    return {
        "quantity": quantity,
        "calculated_at": calculated_at,
        "catalog_object_type": object_type,
    }


def count_value(count: InventoryCount) -> dict[str, Any]:
    """The JSON value recorded in the change log for a count."""
    return _value(count.quantity, count.calculated_at, count.catalog_object_type)


def _newest_per_key(counts: Iterable[InventoryCount]) -> dict[Key, InventoryCount]:
    """Collapse duplicates within a page: the newest calculated_at wins (the later row on a tie)."""
    chosen: dict[Key, InventoryCount] = {}
    for c in counts:
        key = (c.catalog_object_id, c.location_id, c.state)
        prev = chosen.get(key)
        if prev is None or c.calculated_at_ns >= prev.calculated_at_ns:
            chosen[key] = c
    return chosen


# The stored rows of a page's keys in one statement, whatever the page's size. A LEFT JOIN from
# json_each, and not a JOIN on a VALUES list: with sqlite_stat1 present (migration 7 writes it) SQLite
# 3.38+ may put a Bloom filter on the inner table of a join, and it builds one by scanning that whole
# table first: every lookup query then read the entire mirror (measured: 57 ms per 300 keys at 200,000
# rows, 217 ms at 1,000,000, against 1 ms like this). The planner never puts a Bloom filter on the
# right side of a LEFT JOIN, which also keeps json_each the outer loop (one primary-key search per key,
# in the page's order). The rows found come back as one JSON array in one result row (the FILTER
# leaves out the keys not stored, without a WHERE that would turn the LEFT JOIN into a JOIN): one
# step of the statement instead of one per key, each of which takes the GIL back from the thread
# parsing the next page (issue 13). ``json_extract`` and not ``->>``: SQLite (3.40 here) keeps the
# parse of ``k.value`` for the next ``json_extract`` call of the row, while each ``->>`` parses it
# again (measured at 200,000 rows: 7.7 -> 6.0 ms per 1,000 keys, the same rows found).
_LOAD = (
    "SELECT json_group_array(json_array(c.catalog_object_id, c.location_id, c.state,"
    " c.catalog_object_type, c.quantity, c.calculated_at))"
    " FILTER (WHERE c.catalog_object_id IS NOT NULL)"
    " FROM json_each(?) AS k LEFT JOIN inventory_counts AS c"
    " ON c.source = ? AND c.location_id = json_extract(k.value, '$[1]')"
    " AND c.catalog_object_id = json_extract(k.value, '$[0]') AND c.state = json_extract(k.value, '$[2]')"
)


async def load(conn: aiosqlite.Connection, source: str, keys: Sequence[Key]) -> dict[Key, Stored]:
    """The stored rows for ``keys`` (missing keys are absent from the result)."""
    if not keys:
        return {}
    # One trip to the connection's thread (execute, fetchall and the cursor's close are three).
    [[found]] = await conn.execute_fetchall(_LOAD, (orjson.dumps(keys).decode(), source))
    return {(r[0], r[1], r[2]): Stored(r[3], r[4], r[5]) for r in orjson.loads(found)}


def _same(stored: Stored, stored_ns: int, count: InventoryCount) -> bool:
    """Equal as values: same instant, same decimal quantity, same object type."""
    return (
        stored_ns == count.calculated_at_ns
        and stored.catalog_object_type == count.catalog_object_type
        and parse_quantity(stored.quantity) == count.quantity_value
    )


async def apply_page(
    conn: aiosqlite.Connection,
    source: str,
    counts: Sequence[InventoryCount],
    *,
    pass_id: int | PassStamp,
    recorded_at: str,
    mark_seen: bool = False,
    keep_seen: bool = False,
    known_only: bool = False,
    expect_new: bool = False,
) -> ApplyResult:
    """Apply one page inside the caller's transaction; append one change per real change.

    Rows written carry ``pass_id`` in ``seen_pass`` (given as a coroutine function, it is
    asked for only when the page writes a row: an incremental pass records itself with its
    first change, issue 11); with ``mark_seen`` (full passes) unchanged rows are
    stamped too, so the pass can then find the rows that vanished upstream. With ``keep_seen`` (the
    webhook fast path, ``pass_id`` the running full pass or 0) an updated row keeps its stamp when
    ``pass_id`` is 0, and with ``known_only`` (the fast path too) a count the mirror does not hold
    is left alone. This is the hot path of every sync: it touches SQLite in at most six
    statements whatever the page's size (the lookup, the SKUs, the seq, the entries, the mirror
    rows, the unchanged rows' stamps), and binds no None where it can help it (``sqlite3``
    adapts each None bound the slow way: 1.2 us each, measured).

    With ``expect_new`` (a full pass whose previous page held only counts the mirror did not: a
    first sync) the page is first inserted as it is, with no lookup: when none of its keys was
    stored that is the whole work; else it is undone (a savepoint) and applied as usual.
    """
    if not isinstance(pass_id, int) and (mark_seen or expect_new):
        pass_id = await pass_id()
    incoming = _newest_per_key(counts)
    if expect_new and isinstance(pass_id, int) and not known_only and not keep_seen and incoming:
        inserted = await _insert_new(conn, source, incoming, pass_id, recorded_at)
        if inserted is not None:
            return inserted
    stored = await load(conn, source, list(incoming)) if incoming else {}
    writes: list[InventoryCount] = []
    olds: list[str | None] = []
    seen: list[tuple[int, str, str, str, str]] = []
    stale = unknown = 0
    dumps = orjson.dumps
    for key, count in incoming.items():
        old = stored.get(key) if stored else None
        if old is None:
            if known_only:
                unknown += 1
                continue
            writes.append(count)
            olds.append(None)
            continue
        stored_ns = parse_ns(old.calculated_at)
        is_stale = count.calculated_at_ns < stored_ns
        if is_stale or _same(old, stored_ns, count):
            stale += is_stale
            if mark_seen and isinstance(pass_id, int):
                seen.append((pass_id, source, *key))
            continue
        writes.append(count)
        olds.append(dumps(old.value()).decode())
    first_seq = None
    if writes:
        stamp = pass_id if isinstance(pass_id, int) else await pass_id()
        first_seq = await _log_updated(conn, source, writes, olds, recorded_at)
        await conn.executemany(
            _UPSERT_KEEP_SEEN if keep_seen else _UPSERT,
            _mirror_rows(source, writes, first_seq, stamp),
        )
    if seen:
        await conn.executemany(_MARK_SEEN, seen)
    unchanged = len(incoming) - len(writes) - stale - unknown
    return ApplyResult(
        changes=len(writes),
        unchanged=unchanged,
        stale=stale,
        last_seq=None if first_seq is None else first_seq + len(writes) - 1,
        unknown=unknown,
        written=writes,
        first_sight=olds.count(None),
    )


async def _log_updated(
    conn: aiosqlite.Connection,
    source: str,
    writes: Sequence[InventoryCount],
    olds: Sequence[str | None],
    recorded_at: str,
) -> int:
    """One ``count.updated`` entry per count of ``writes`` (``olds``: each one's old value as
    JSON text, None on first sight), with its variation's SKU; return the first entry's seq."""
    known = await variation_skus(conn, source, {c.catalog_object_id for c in writes})
    skus = [known.get(c.catalog_object_id) for c in writes]
    return await changelog.append_counts(
        conn, KIND_UPDATED, source, writes, olds, skus, recorded_at
    )


def _mirror_rows(
    source: str, writes: Sequence[InventoryCount], first_seq: int, pass_id: int
) -> list[tuple[object, ...]]:
    """The mirror rows of ``writes``, the i-th naming change-log entry ``first_seq + i``."""
    return [
        (
            source,
            c.catalog_object_id,
            c.location_id,
            c.state,
            c.catalog_object_type,
            c.quantity,
            c.calculated_at,
            seq,
            pass_id,
        )
        for seq, c in enumerate(writes, first_seq)
    ]


_INSERT_NEW = _UPSERT.split(" ON CONFLICT")[0] + " ON CONFLICT DO NOTHING"


async def _insert_new(
    conn: aiosqlite.Connection,
    source: str,
    incoming: dict[Key, InventoryCount],
    pass_id: int,
    recorded_at: str,
) -> ApplyResult | None:
    """``apply_page`` of a page none of whose keys the mirror holds (every count a first sight),
    without the lookup: insert the rows, skipping any key that is stored; if one was, undo that
    (None: apply the page as usual), else append the page's entries (seqs as the rows say)."""
    writes = list(incoming.values())
    base = await changelog.high_water(conn)
    await conn.execute("SAVEPOINT syncd_insert_new")
    cursor = await conn.executemany(
        _INSERT_NEW,
        _mirror_rows(source, writes, base + 1, pass_id),
    )
    if cursor.rowcount != len(writes):
        await conn.execute("ROLLBACK TO syncd_insert_new")
        await conn.execute("RELEASE syncd_insert_new")
        return None
    await conn.execute("RELEASE syncd_insert_new")
    first_seq = await _log_updated(conn, source, writes, [None] * len(writes), recorded_at)
    if first_seq != base + 1:  # the rows name seqs from base + 1: nothing may come in between
        raise StoreError(
            f"change-log seq moved under a page insert: expected {base + 1}, got {first_seq}",
            op="counts.apply_page",
            source=source,
        )
    return ApplyResult(
        changes=len(writes),
        unchanged=0,
        stale=0,
        last_seq=first_seq + len(writes) - 1,
        written=writes,
        first_sight=len(writes),
    )


async def remove_unseen(
    conn: aiosqlite.Connection,
    source: str,
    *,
    pass_id: int,
    location_id: str | None,
    recorded_at: str,
) -> int:
    """Delete rows of ``source`` (one location, or all) not seen by full pass ``pass_id``; log each."""
    sql = "DELETE FROM inventory_counts WHERE source = ? AND seen_pass != ?"
    params: list[Any] = [source, pass_id]
    if location_id is not None:
        sql += " AND location_id = ?"
        params.append(location_id)
    return await _delete_logged(conn, source, sql, params, recorded_at)


async def remove_outside(
    conn: aiosqlite.Connection, source: str, *, location_ids: Sequence[str], recorded_at: str
) -> int:
    """Delete rows of ``source`` at locations no longer configured; log each."""
    marks = ",".join("?" for _ in location_ids)
    sql = f"DELETE FROM inventory_counts WHERE source = ? AND location_id NOT IN ({marks})"
    return await _delete_logged(conn, source, sql, [source, *location_ids], recorded_at)


FORGET_CHUNK = 5000
"""Rows per statement when a whole source is removed: what one chunk holds in memory."""


async def remove_source(
    conn: aiosqlite.Connection, source: str, *, recorded_at: str, chunk: int = FORGET_CHUNK
) -> int:
    """Delete every row of ``source``, logging each like ``remove_unseen`` does; return how many.

    Runs in the caller's transaction, ``chunk`` rows at a time in primary-key order (each chunk is
    one key range: the first ``chunk`` rows left), so a source of a million rows never sits in
    memory at once, and the entries come out in the same order as one big removal would log them.
    """
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    removed = 0
    while True:
        async with conn.execute(
            "SELECT location_id, catalog_object_id, state FROM inventory_counts WHERE source = ?"
            " ORDER BY location_id, catalog_object_id, state LIMIT 1 OFFSET ?",
            (source, chunk - 1),
        ) as cur:
            last = await cur.fetchone()
        sql = "DELETE FROM inventory_counts WHERE source = ?"
        params: list[Any] = [source]
        if last is not None:
            sql += " AND (location_id, catalog_object_id, state) <= (?, ?, ?)"
            params.extend(last)
        removed += await _delete_logged(conn, source, sql, params, recorded_at)
        if last is None:  # fewer than ``chunk`` rows were left: that delete took them all
            return removed


async def _delete_logged(
    conn: aiosqlite.Connection, source: str, sql: str, params: list[Any], recorded_at: str
) -> int:
    sql += " RETURNING catalog_object_id, location_id, state, catalog_object_type, quantity, calculated_at"
    async with conn.execute(sql, params) as cur:
        rows = await cur.fetchall()
    known = await variation_skus(conn, source, {r[0] for r in rows}) if rows else {}
    entries = [
        NewChange(
            kind=KIND_REMOVED,
            source=source,
            catalog_object_id=r[0],
            location_id=r[1],
            state=r[2],
            old=Stored(r[3], r[4], r[5]).value(),
            new=None,
            sku=known.get(r[0]),
        )
        for r in sorted(rows, key=lambda r: (r[1], r[0], r[2]))
    ]
    await changelog.append(conn, entries, recorded_at)
    return len(entries)


async def total(conn: aiosqlite.Connection, source: str | None = None) -> int:
    """Number of mirrored counts (for one source, or all)."""
    sql = "SELECT COUNT(*) FROM inventory_counts"
    params: list[str] = []
    if source is not None:
        sql += " WHERE source = ?"
        params.append(source)
    async with conn.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0
