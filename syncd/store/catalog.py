"""What a count means (issue 12): catalog items and variations and the locations, per source, and
their change-log entries.

The same rule as the counts: an entry is written exactly when a stored value changes, in the same
transaction. Versions never go backwards: an object older than the stored one (a page re-read by
the overlap, a late answer) changes nothing. A version bump that leaves every mirrored field as it
was (Square bumps the version for a price change, which syncd does not mirror) updates the stored
version and writes no entry. Deleted objects are kept, marked ``is_deleted``, never forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from syncd.store import bulk, changelog

if TYPE_CHECKING:
    import aiosqlite

KIND_CATALOG_UPDATED = "catalog.updated"
KIND_CATALOG_DELETED = "catalog.deleted"
KIND_LOCATION_UPDATED = "location.updated"
KIND_CATALOG_REMOVED = "catalog.removed"
KIND_LOCATION_REMOVED = "location.removed"
# Rows read (and logged) at a time by remove_source: a big catalog never sits in memory at once.
REMOVE_CHUNK = 5_000

ITEM = "ITEM"
ITEM_VARIATION = "ITEM_VARIATION"


class ItemFields(Protocol):
    """What :func:`apply_items` reads of an item: an :class:`ItemRow`, or the upstream's
    ``syncd.model.CatalogItem`` as parsed (a first sync builds no second record per object)."""

    @property
    def item_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def is_deleted(self) -> bool: ...
    @property
    def version(self) -> int: ...
    @property
    def updated_at(self) -> str: ...


class VariationFields(Protocol):
    """What :func:`apply_variations` reads of a variation: a :class:`VariationRow`, or the
    upstream's ``syncd.model.CatalogVariation`` as parsed."""

    @property
    def variation_id(self) -> str: ...
    @property
    def item_id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def sku(self) -> str | None: ...
    @property
    def gtin(self) -> str | None: ...
    @property
    def measurement_unit_id(self) -> str | None: ...
    @property
    def track_inventory(self) -> bool | None: ...
    @property
    def is_deleted(self) -> bool: ...
    @property
    def version(self) -> int: ...
    @property
    def updated_at(self) -> str: ...


def item_value(item: ItemFields) -> dict[str, Any]:
    """An item's mirrored value, as its change-log entries carry it."""
    return {"type": ITEM, "name": item.name, "is_deleted": item.is_deleted}


def variation_value(var: VariationFields) -> dict[str, Any]:
    """A variation's mirrored value, as its change-log entries carry it."""
    return {
        "type": ITEM_VARIATION,
        "item_id": var.item_id,
        "name": var.name,
        "sku": var.sku,
        "gtin": var.gtin,
        "measurement_unit_id": var.measurement_unit_id,
        "track_inventory": var.track_inventory,
        "is_deleted": var.is_deleted,
    }


@dataclass(frozen=True, slots=True)
class ItemRow:
    item_id: str
    name: str | None
    is_deleted: bool
    version: int
    updated_at: str

    def value(self) -> dict[str, Any]:
        return item_value(self)


@dataclass(frozen=True, slots=True)
class VariationRow:
    variation_id: str
    item_id: str | None
    name: str | None
    sku: str | None
    gtin: str | None
    measurement_unit_id: str | None
    track_inventory: bool | None
    is_deleted: bool
    version: int
    updated_at: str

    def value(self) -> dict[str, Any]:
        return variation_value(self)


@dataclass(frozen=True, slots=True)
class LocationRow:
    location_id: str
    name: str | None
    status: str | None
    timezone: str | None

    def value(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "timezone": self.timezone}


@dataclass(frozen=True, slots=True)
class CatalogResult:
    """What one page did: entries written, objects older than the stored ones, unchanged ones."""

    changes: int = 0
    stale: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class CatalogState:
    source: str
    latest_time: str | None
    last_full_at: str | None
    last_success_at: str | None
    last_error: str | None


def _kind(value: dict[str, Any]) -> str:
    return KIND_CATALOG_DELETED if value["is_deleted"] else KIND_CATALOG_UPDATED


def _entry(
    kind: str,
    source: str,
    object_id: str | None,
    location_id: str | None,
    old: dict[str, Any] | None,
    new: dict[str, Any],
) -> changelog.Row:
    old_json = None if old is None else orjson.dumps(old).decode()
    return (kind, source, object_id, location_id, None, None, old_json, orjson.dumps(new).decode())


def _newest(rows: Iterable[Any], key: str) -> dict[str, Any]:
    """One row per id, the highest version (a page may repeat an object), in id order: the
    inserts that follow then walk each B-tree once in key order rather than at random."""
    out: dict[str, Any] = {}
    for row in rows:
        ident = getattr(row, key)
        if ident not in out or row.version >= out[ident].version:
            out[ident] = row
    return dict(sorted(out.items()))


async def _stored(
    conn: aiosqlite.Connection,
    sql: str,
    source: str,
    ids: Collection[str],
    stored_ids: Collection[str] | None = None,
) -> dict[str, tuple[Any, ...]]:
    """Stored rows by id (first column): one statement whatever the number of ids (``sql`` takes
    them as one JSON array, ``json_each``, not one bound variable each). ``stored_ids``, when
    given, holds every id of ``source`` that may be stored (the caller knows the others are not):
    only those are looked up."""
    if stored_ids is not None:
        ids = [i for i in ids if i in stored_ids]
    if not ids:
        return {}
    async with conn.execute(sql, (source, orjson.dumps(list(ids)).decode())) as cur:
        return {row[0]: tuple(row) for row in await cur.fetchall()}


def _text(value: str | None) -> str | int:
    """A nullable free text (possibly empty) bound as ``NULLIF(?, 0)``: 0 for None, since binding
    a None costs ``sqlite3`` an adapter lookup per value (see ``changelog._INSERT_VALUES``); a text
    never equals the integer 0, so an empty one stays empty."""
    return 0 if value is None else value


async def apply_items(
    conn: aiosqlite.Connection,
    source: str,
    items: Sequence[ItemFields],
    recorded_at: str,
    *,
    stored_ids: Collection[str] | None = None,
) -> CatalogResult:
    """Apply catalog items inside the caller's transaction. ``stored_ids``: when given, a superset
    of the item ids of ``source`` stored (a first sync into an empty mirror: the ids it applied so
    far); only those are looked up, every other is new."""
    incoming: dict[str, ItemFields] = _newest(items, "item_id")
    stored = await _stored(
        conn,
        "SELECT item_id, name, is_deleted, version FROM catalog_items"
        " WHERE source = ? AND item_id IN (SELECT value FROM json_each(?))",
        source,
        incoming.keys(),
        stored_ids,
    )
    entries: list[changelog.Row] = []
    writes: list[ItemFields] = []
    bumps: list[tuple[int, str, str, str]] = []
    stale = unchanged = 0
    for item_id, item in incoming.items():
        new = item_value(item)
        old = stored.get(item_id)
        if old is None:
            writes.append(item)
            entries.append(_entry(_kind(new), source, item_id, None, None, new))
            continue
        if item.version < old[3]:
            stale += 1
            continue
        old_value = _item_value(old)
        if old_value == new:
            unchanged += 1
            if item.version > old[3]:
                bumps.append((item.version, item.updated_at, source, item_id))
            continue
        writes.append(item)
        entries.append(_entry(_kind(new), source, item_id, None, old_value, new))
    seqs = await changelog.append_rows(conn, entries, recorded_at)
    await bulk.insert_values(
        conn,
        "INSERT INTO catalog_items (source, item_id, name, is_deleted, version, updated_at, seq)",
        "(?, ?, NULLIF(?, 0), ?, ?, ?, ?)",
        [
            (source, i.item_id, _text(i.name), int(i.is_deleted), i.version, i.updated_at, seq)
            for i, seq in zip(writes, seqs, strict=True)
        ],
        "ON CONFLICT (source, item_id) DO UPDATE SET name = excluded.name,"
        " is_deleted = excluded.is_deleted, version = excluded.version,"
        " updated_at = excluded.updated_at, seq = excluded.seq",
    )
    if bumps:
        await conn.executemany(
            "UPDATE catalog_items SET version = ?, updated_at = ? WHERE source = ? AND item_id = ?",
            bumps,
        )
    return CatalogResult(len(entries), stale, unchanged)


_VARIATION_COLUMNS = (
    "variation_id, item_id, name, sku, gtin, measurement_unit_id, track_inventory, is_deleted,"
    " version"
)


def _stored_variation(row: tuple[Any, ...]) -> VariationRow:
    track = None if row[6] is None else bool(row[6])
    return VariationRow(
        row[0], row[1], row[2], row[3], row[4], row[5], track, bool(row[7]), row[8], ""
    )


async def apply_variations(
    conn: aiosqlite.Connection,
    source: str,
    variations: Sequence[VariationFields],
    recorded_at: str,
    *,
    stored_ids: Collection[str] | None = None,
) -> CatalogResult:
    """Apply item variations inside the caller's transaction; ``stored_ids`` as
    :func:`apply_items` takes it."""
    incoming: dict[str, VariationFields] = _newest(variations, "variation_id")
    stored = await _stored(
        conn,
        f"SELECT {_VARIATION_COLUMNS} FROM catalog_variations"
        " WHERE source = ? AND variation_id IN (SELECT value FROM json_each(?))",
        source,
        incoming.keys(),
        stored_ids,
    )
    entries: list[changelog.Row] = []
    writes: list[VariationFields] = []
    bumps: list[tuple[int, str, str, str]] = []
    stale = unchanged = 0
    for variation_id, var in incoming.items():
        new = variation_value(var)
        row = stored.get(variation_id)
        if row is None:
            writes.append(var)
            entries.append(_entry(_kind(new), source, variation_id, None, None, new))
            continue
        old = _stored_variation(row)
        if var.version < old.version:
            stale += 1
            continue
        old_value = old.value()
        if old_value == new:
            unchanged += 1
            if var.version > old.version:
                bumps.append((var.version, var.updated_at, source, variation_id))
            continue
        writes.append(var)
        entries.append(_entry(_kind(new), source, variation_id, None, old_value, new))
    seqs = await changelog.append_rows(conn, entries, recorded_at, skus=[v.sku for v in writes])
    await bulk.insert_values(
        conn,
        "INSERT INTO catalog_variations (source, variation_id, item_id, name, sku, gtin,"
        " measurement_unit_id, track_inventory, is_deleted, version, updated_at, seq)",
        "(?, ?, NULLIF(?, 0), NULLIF(?, 0), NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, 0),"
        " NULLIF(?, ''), ?, ?, ?, ?)",
        [
            (
                source,
                v.variation_id,
                _text(v.item_id),
                _text(v.name),
                v.sku or "",  # never empty: an empty SKU or GTIN is stored NULL
                v.gtin or "",
                _text(v.measurement_unit_id),
                "" if v.track_inventory is None else int(v.track_inventory),
                int(v.is_deleted),
                v.version,
                v.updated_at,
                seq,
            )
            for v, seq in zip(writes, seqs, strict=True)
        ],
        "ON CONFLICT (source, variation_id) DO UPDATE SET item_id = excluded.item_id,"
        " name = excluded.name, sku = excluded.sku, gtin = excluded.gtin,"
        " measurement_unit_id = excluded.measurement_unit_id,"
        " track_inventory = excluded.track_inventory, is_deleted = excluded.is_deleted,"
        " version = excluded.version, updated_at = excluded.updated_at, seq = excluded.seq",
    )
    if bumps:
        await conn.executemany(
            "UPDATE catalog_variations SET version = ?, updated_at = ?"
            " WHERE source = ? AND variation_id = ?",
            bumps,
        )
    return CatalogResult(len(entries), stale, unchanged)


async def apply_locations(
    conn: aiosqlite.Connection, source: str, locations: Sequence[LocationRow], recorded_at: str
) -> CatalogResult:
    """Apply the seller's locations (every one the Locations API lists, active or not) inside the
    caller's transaction. Locations carry no version: the newest answer is the truth."""
    incoming = {loc.location_id: loc for loc in locations}
    stored = await _stored(
        conn,
        "SELECT location_id, name, status, timezone FROM locations"
        " WHERE source = ? AND location_id IN (SELECT value FROM json_each(?))",
        source,
        incoming.keys(),
    )
    entries: list[changelog.Row] = []
    writes: list[LocationRow] = []
    for location_id, loc in incoming.items():
        row = stored.get(location_id)
        old = None if row is None else LocationRow(*row).value()
        if old == loc.value():
            continue
        writes.append(loc)
        entries.append(_entry(KIND_LOCATION_UPDATED, source, None, location_id, old, loc.value()))
    seqs = await changelog.append_rows(conn, entries, recorded_at)
    await conn.executemany(
        "INSERT INTO locations (source, location_id, name, status, timezone, seq)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, location_id) DO UPDATE SET"
        " name = excluded.name, status = excluded.status, timezone = excluded.timezone,"
        " seq = excluded.seq",
        [
            (source, loc.location_id, loc.name, loc.status, loc.timezone, seq)
            for loc, seq in zip(writes, seqs, strict=True)
        ],
    )
    return CatalogResult(len(entries), 0, len(incoming) - len(writes))


async def holds_catalog(conn: aiosqlite.Connection, source: str) -> bool:
    """Whether the mirror holds any catalog item or variation of ``source`` (deleted or not)."""
    async with conn.execute(
        "SELECT EXISTS (SELECT 1 FROM catalog_items WHERE source = ?)"
        " OR EXISTS (SELECT 1 FROM catalog_variations WHERE source = ?)",
        (source, source),
    ) as cur:
        row = await cur.fetchone()
    return bool(row and row[0])


async def load_state(conn: aiosqlite.Connection, source: str) -> CatalogState:
    async with conn.execute(
        "SELECT latest_time, last_full_at, last_success_at, last_error FROM catalog_state"
        " WHERE source = ?",
        (source,),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return CatalogState(source, None, None, None, None)
    return CatalogState(source, row[0], row[1], row[2], row[3])


async def save_state(conn: aiosqlite.Connection, state: CatalogState) -> None:
    await conn.execute(
        "INSERT INTO catalog_state (source, latest_time, last_full_at, last_success_at,"
        " last_error) VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET"
        " latest_time = excluded.latest_time, last_full_at = excluded.last_full_at,"
        " last_success_at = excluded.last_success_at, last_error = excluded.last_error",
        (
            state.source,
            state.latest_time,
            state.last_full_at,
            state.last_success_at,
            state.last_error,
        ),
    )


async def unknown_variation_counts(conn: aiosqlite.Connection, source: str | None = None) -> int:
    """Counts whose variation the catalog does not (yet) know: they join as unknown.

    Computed as all counts minus those that join a variation: one pass over the counts' index per
    known variation, more than twice as fast as probing the catalog for every count (an anti-join),
    but still a read of every count (some 0.35 s for 1,000,000, the anti-join 0.85 s:
    bench/catalog_figures.py): ``syncd status`` reads the figure
    :func:`save_figures` stored instead.
    """
    where, params = ("", ()) if source is None else (" WHERE source = ?", (source,))
    known_where = "" if source is None else " WHERE v.source = ?"
    async with conn.execute(
        f"SELECT (SELECT COUNT(*) FROM inventory_counts{where}) - (SELECT COUNT(*) FROM"
        " catalog_variations AS v JOIN inventory_counts AS c ON c.source = v.source"
        f" AND c.catalog_object_id = v.variation_id{known_where})",
        params * 2,
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class CatalogFigures:
    """What ``syncd status`` shows of a source's catalog mirror, counted at one moment."""

    variations: int
    """Variations mirrored and not deleted."""
    unknown_variations: int
    """Mirrored counts whose variation the catalog mirror does not have."""


async def count_figures(conn: aiosqlite.Connection, source: str) -> CatalogFigures | None:
    """Count the figures of ``source`` (a read of every count: see
    :func:`unknown_variation_counts`); None when its catalog was never read (no ``catalog_state``
    row: the catalog is off, or its first pass has not run), since every count would be unknown."""
    async with conn.execute("SELECT 1 FROM catalog_state WHERE source = ?", (source,)) as cur:
        if await cur.fetchone() is None:
            return None
    async with conn.execute(
        "SELECT COUNT(*) FROM catalog_variations WHERE source = ? AND is_deleted = 0", (source,)
    ) as cur:
        row = await cur.fetchone()
    variations = int(row[0]) if row else 0
    return CatalogFigures(variations, await unknown_variation_counts(conn, source))


async def save_figures(
    conn: aiosqlite.Connection, source: str, figures: CatalogFigures, checked_at: str
) -> bool:
    """Store figures counted in a read that began after ``checked_at`` (RFC 3339, as
    ``format_ns`` writes it), unless figures of a later read are stored already (two passes of a
    source may count at once and finish in either order). False when nothing was written."""
    cur = await conn.execute(
        "UPDATE catalog_state SET variations = ?, unknown_variations = ?,"
        " unknown_checked_at = ? WHERE source = ?"
        " AND (unknown_checked_at IS NULL OR unknown_checked_at <= ?)",
        (figures.variations, figures.unknown_variations, checked_at, source, checked_at),
    )
    return bool(cur.rowcount)


_OVERVIEW_FIGURES = ("variations", "unknown_variations", "unknown_checked_at")


async def overview(conn: aiosqlite.Connection) -> dict[str, dict[str, Any]]:
    """The catalog mirror of every source whose catalog was read, by source: its watermark and
    last passes (``catalog_state``), the locations mirrored, and the stored figures (NULL until
    first counted). A source forgotten since (no ``sources`` row, no counts) is left out. Cheap:
    no read of the counts (one index probe per source). A database from before the catalog
    (schema 7) has none; one from before the figures (schema 10) reads them as None."""
    async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
        tables = {str(r[0]) for r in await cur.fetchall()}
    if "catalog_state" not in tables:
        return {}
    async with conn.execute("PRAGMA table_info(catalog_state)") as cur:
        columns = {str(r[1]) for r in await cur.fetchall()}
    figures = ", ".join(f if f in columns else f"NULL AS {f}" for f in _OVERVIEW_FIGURES)
    known = (
        "s.source IN (SELECT source FROM sources) OR " if "sources" in tables else ""
    ) + "EXISTS (SELECT 1 FROM inventory_counts AS c WHERE c.source = s.source)"
    async with conn.execute(
        "SELECT s.source, s.latest_time, s.last_full_at, s.last_success_at, s.last_error,"
        " (SELECT COUNT(*) FROM locations AS l WHERE l.source = s.source),"
        f" {figures} FROM catalog_state AS s WHERE {known} ORDER BY s.source"
    ) as cur:
        rows = await cur.fetchall()
    return {
        str(r[0]): {
            "latest_time": r[1],
            "last_full_at": r[2],
            "last_success_at": r[3],
            "last_error": r[4],
            "locations": int(r[5]),
            "variations": r[6],
            "unknown_variations": r[7],
            "unknown_checked_at": r[8],
        }
        for r in rows
    }


async def mark_unseen_deleted(
    conn: aiosqlite.Connection,
    source: str,
    *,
    seen_items: set[str],
    seen_variations: set[str],
    recorded_at: str,
) -> int:
    """After a full catalog read: mark deleted (one ``catalog.deleted`` entry each) the items and
    variations of ``source`` still live in the mirror that the catalog no longer lists at all.
    Their version stays: a later answer that lists them again, at any version not older, revives
    them. Returns how many were marked."""
    marked = 0
    for table, id_column, seen, to_value in (
        ("catalog_items", "item_id", seen_items, _item_value),
        ("catalog_variations", "variation_id", seen_variations, _variation_value),
    ):
        # The ids alone first: a full pass of a large catalog finds few or none gone, and a
        # whole row per live object (78,000 of them) cost more than the rest of the sweep.
        async with conn.execute(
            f"SELECT {id_column} FROM {table} WHERE source = ? AND is_deleted = 0", (source,)
        ) as cur:
            gone_ids = [row[0] for row in await cur.fetchall() if row[0] not in seen]
        if not gone_ids:
            continue
        async with conn.execute(
            f"SELECT {_COLUMNS_OF[table]} FROM {table} WHERE source = ? AND {id_column} IN"
            f" (SELECT value FROM json_each(?)) ORDER BY {id_column}",
            (source, orjson.dumps(gone_ids).decode()),
        ) as cur:
            gone = [tuple(row) for row in await cur.fetchall()]
        entries = []
        for row in gone:
            old = to_value(row)
            entries.append(
                _entry(KIND_CATALOG_DELETED, source, row[0], None, old, {**old, "is_deleted": True})
            )
        skus = [row[3] if table == "catalog_variations" else None for row in gone]
        seqs = await changelog.append_rows(conn, entries, recorded_at, skus=skus)
        await conn.executemany(
            f"UPDATE {table} SET is_deleted = 1, seq = ? WHERE source = ? AND {id_column} = ?",
            [(seq, source, row[0]) for row, seq in zip(gone, seqs, strict=True)],
        )
        marked += len(gone)
    return marked


async def remove_source(
    conn: aiosqlite.Connection, source: str, *, recorded_at: str, chunk: int = REMOVE_CHUNK
) -> int:
    """Delete every catalog item, variation and location of ``source`` and its catalog state, in
    the caller's transaction (``syncd sources forget``); return how many rows went.

    Each row goes with one ``catalog.removed`` or ``location.removed`` entry (``old`` its value as
    its last entry's ``new`` holds it, ``new`` null), so replaying the log still yields the
    catalog tables. ``chunk`` rows at a time, in key order: items, variations, then locations.
    """
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    removed = 0
    for table, id_column, to_value in (
        ("catalog_items", "item_id", _item_value),
        ("catalog_variations", "variation_id", _variation_value),
        ("locations", "location_id", _location_value),
    ):
        after = ""
        while True:
            async with conn.execute(
                f"SELECT {_COLUMNS_OF[table]} FROM {table} WHERE source = ? AND {id_column} > ?"
                f" ORDER BY {id_column} LIMIT ?",
                (source, after, chunk),
            ) as cur:
                rows = [tuple(row) for row in await cur.fetchall()]
            if not rows:
                break
            await _log_removed(conn, source, table, rows, to_value, recorded_at)
            await conn.execute(
                f"DELETE FROM {table} WHERE source = ? AND {id_column} > ? AND {id_column} <= ?",
                (source, after, rows[-1][0]),
            )
            removed += len(rows)
            after = rows[-1][0]
    await conn.execute("DELETE FROM catalog_state WHERE source = ?", (source,))
    return removed


async def _log_removed(
    conn: aiosqlite.Connection,
    source: str,
    table: str,
    rows: list[tuple[Any, ...]],
    to_value: Callable[[tuple[Any, ...]], dict[str, Any]],
    recorded_at: str,
) -> None:
    """One removal entry per row of ``table`` (rows as ``_COLUMNS_OF[table]`` reads them)."""
    location = table == "locations"
    kind = KIND_LOCATION_REMOVED if location else KIND_CATALOG_REMOVED
    entries: list[changelog.Row] = []
    for row in rows:
        object_id, location_id = (None, row[0]) if location else (row[0], None)
        old = orjson.dumps(to_value(row)).decode()
        entries.append((kind, source, object_id, location_id, None, None, old, None))
    skus = [row[3] for row in rows] if table == "catalog_variations" else None
    await changelog.append_rows(conn, entries, recorded_at, skus=skus)


def _location_value(row: tuple[Any, ...]) -> dict[str, Any]:
    return LocationRow(row[0], row[1], row[2], row[3]).value()


def _item_value(row: tuple[Any, ...]) -> dict[str, Any]:
    return ItemRow(row[0], row[1], bool(row[2]), 0, "").value()


def _variation_value(row: tuple[Any, ...]) -> dict[str, Any]:
    return _stored_variation(row).value()


_COLUMNS_OF = {
    "catalog_items": "item_id, name, is_deleted, version",
    "catalog_variations": _VARIATION_COLUMNS,
    "locations": "location_id, name, status, timezone",
}


async def variation_skus(
    conn: aiosqlite.Connection, source: str, variation_ids: Collection[str]
) -> dict[str, str]:
    """The known SKUs of these variations (ids without one, or unknown, are absent): what a count
    entry carries in its ``sku`` column."""
    if not variation_ids:
        return {}
    # One statement per page whatever its size (json_each, not one bound variable per id).
    async with conn.execute(
        "SELECT variation_id, sku FROM catalog_variations WHERE source = ? AND variation_id IN"
        " (SELECT value FROM json_each(?)) AND sku IS NOT NULL",
        (source, orjson.dumps(list(variation_ids)).decode()),
    ) as cur:
        return {str(vid): str(sku) for vid, sku in await cur.fetchall()}
