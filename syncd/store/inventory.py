"""Reading counts through the ``inventory`` view (issue 12): each count with its SKU, item,
variation and location names, filtered by source, location, variation, SKU or location name, in
pages (keyset pagination in the mirror's key order).

Every page is an index range scan, never a sort of a large set: a SKU names few counts (the view
reaches them by ``catalog_variations_by_sku`` then ``inventory_counts_by_object``); a location
name is first resolved to its ``(source, location_id)`` pairs (``locations_by_name``), and a
location id without a source to one pair per source, each pair then paged along the mirror's
primary key (:func:`segments`; asked in one query, SQLite would sort the whole location, or scan
it from its start, for every page). tests/test_store_inventory.py checks the plans.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from syncd.store.queries import CountKey
from syncd.store.rows import fetch_dicts

if TYPE_CHECKING:
    import aiosqlite

COLUMNS = (
    "source",
    "location_id",
    "location_name",
    "catalog_object_id",
    "sku",
    "gtin",
    "item_id",
    "item_name",
    "variation_name",
    "state",
    "catalog_object_type",
    "quantity",
    "calculated_at",
    "catalog_deleted",
    "unknown_variation",
    "seq",
)
KEY = ("source", "location_id", "catalog_object_id", "state")
_BOOLEANS = ("catalog_deleted", "unknown_variation")


@dataclass(frozen=True, slots=True)
class InventoryFilter:
    """Equality filters on the view (None: any)."""

    source: str | None = None
    location_id: str | None = None
    catalog_object_id: str | None = None
    sku: str | None = None
    location_name: str | None = None

    def equalities(self) -> list[tuple[str, str]]:
        return [
            (column, value)
            for column, value in (
                ("source", self.source),
                ("location_id", self.location_id),
                ("catalog_object_id", self.catalog_object_id),
                ("sku", self.sku),
                ("location_name", self.location_name),
            )
            if value is not None
        ]


def _open_key(filt: InventoryFilter) -> tuple[str, ...]:
    """The key columns a page boundary compares: those after the leading ones fixed by equality
    (``source = ? AND location_id = ?`` leaves ``(catalog_object_id, state) > (?, ?)``, a range
    of the primary key; a row value over the whole key would not be one)."""
    fixed = 0
    for column in KEY[:2]:
        if getattr(filt, column) is None:
            break
        fixed += 1
    return KEY[fixed:]


def page_sql(filt: InventoryFilter, *, after: bool) -> str:
    """The statement of one page: parameters are the equalities' values in
    ``InventoryFilter.equalities`` order, then (with ``after``) the open key columns of the last
    row, then the limit."""
    clauses = [f"{column} = ?" for column, _ in filt.equalities()]
    if after:
        open_key = _open_key(filt)
        marks = ", ".join("?" * len(open_key))
        clauses.append(f"({', '.join(open_key)}) > ({marks})")
    sql = f"SELECT {', '.join(COLUMNS)} FROM inventory"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return sql + f" ORDER BY {', '.join(KEY)} LIMIT ?"


async def has_view(conn: aiosqlite.Connection) -> bool:
    """Whether the database has the view (schema 7 on: an older one is migrated by the daemon)."""
    async with conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = 'inventory'"
    ) as cur:
        return await cur.fetchone() is not None


async def list_inventory(
    conn: aiosqlite.Connection,
    filt: InventoryFilter,
    *,
    after: CountKey | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of the view matching ``filt``, in key order, after the row whose key
    is ``after``: one of the filters :func:`segments` makes (any other filter answers the same
    rows, but may cost a sort or a scan per page)."""
    params: list[Any] = [value for _, value in filt.equalities()]
    if after is not None:
        params.extend(after[len(KEY) - len(_open_key(filt)) :])
    params.append(limit)
    rows = await fetch_dicts(conn, page_sql(filt, after=after is not None), params)
    for row in rows:
        for column in _BOOLEANS:
            row[column] = bool(row[column])
    return rows


async def locations_named(
    conn: aiosqlite.Connection, name: str, source: str | None = None
) -> list[tuple[str, str]]:
    """The ``(source, location_id)`` of every mirrored location called exactly ``name`` (two
    stores, or two sellers, may share a name), in key order."""
    sql = "SELECT source, location_id FROM locations WHERE name = ?"
    params: tuple[str, ...] = (name,)
    if source is not None:
        sql += " AND source = ?"
        params = (name, source)
    async with conn.execute(sql + " ORDER BY source, location_id", params) as cur:
        return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]


async def sources(conn: aiosqlite.Connection) -> list[str]:
    """Every source with mirrored counts, in order: one index probe per source."""
    async with conn.execute(
        "WITH RECURSIVE s(source) AS (SELECT MIN(source) FROM inventory_counts UNION ALL"
        " SELECT (SELECT MIN(c.source) FROM inventory_counts AS c WHERE c.source > s.source)"
        " FROM s WHERE s.source IS NOT NULL) SELECT source FROM s WHERE source IS NOT NULL"
    ) as cur:
        return [str(r[0]) for r in await cur.fetchall()]


async def segments(conn: aiosqlite.Connection, filt: InventoryFilter) -> list[InventoryFilter]:
    """``filt`` as filters each of which pages as a range of an index, in key order (their
    results, concatenated, are ``filt``'s in key order): a location name becomes its
    ``(source, location_id)`` pairs, resolved now (a location renamed while the pages are read
    keeps its rows out of later pages), a location id without a source one filter per source."""
    if filt.sku is not None:
        return [filt]
    if filt.location_name is not None:
        pairs = await locations_named(conn, filt.location_name, filt.source)
        return [
            replace(filt, source=source, location_id=location_id)
            for source, location_id in pairs
            if filt.location_id in (None, location_id)
        ]
    if filt.location_id is not None and filt.source is None:
        return [replace(filt, source=source) for source in await sources(conn)]
    return [filt]
