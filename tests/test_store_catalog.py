"""The catalog tables (syncd.store.catalog) on a real SQLite file: one entry per real change,
versions never going backwards, deletions marked, locations, the ``inventory`` view by SKU and
location name, and a replay of the log that reproduces the tables."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from syncd.model import InventoryCount
from syncd.store import Store
from syncd.store import catalog as cat
from syncd.store.counts import apply_page
from syncd.store.sync_state import begin_pass
from syncd.timeutil import parse_ns
from tests.helpers import catalog_tables, changes, replay_catalog

AT = "2026-12-01T00:00:00Z"

SHIRT = cat.ItemRow("ITEM1", "Shirt", False, 10, "2026-12-01T00:00:00Z")
SMALL = cat.VariationRow(
    "VAR1", "ITEM1", "Small", "SHIRT-S", "0001", None, True, False, 10, "2026-12-01T00:00:00Z"
)
LARGE = cat.VariationRow(
    "VAR2", "ITEM1", "Large", None, None, None, None, False, 10, "2026-12-01T00:00:00Z"
)
STORE = cat.LocationRow("LOC1", "Main Street", "ACTIVE", "Europe/Berlin")


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


async def apply(store: Store, *objects: Any, source: str = "square") -> cat.CatalogResult:
    items = [o for o in objects if isinstance(o, cat.ItemRow)]
    variations = [o for o in objects if isinstance(o, cat.VariationRow)]
    locations = [o for o in objects if isinstance(o, cat.LocationRow)]

    async def work(conn: Any) -> cat.CatalogResult:
        a = await cat.apply_items(conn, source, items, AT)
        b = await cat.apply_variations(conn, source, variations, AT)
        c = await cat.apply_locations(conn, source, locations, AT)
        return cat.CatalogResult(
            a.changes + b.changes + c.changes,
            a.stale + b.stale + c.stale,
            a.unchanged + b.unchanged + c.unchanged,
        )

    return await store.write(work)


async def test_first_sight_then_repeats_log_nothing(store: Store, db_path: Path) -> None:
    """Each object seen for the first time is one ``catalog.updated``/``location.updated``
    entry; the same objects again write nothing."""
    assert (await apply(store, SHIRT, SMALL, LARGE, STORE)).changes == 4
    assert (await apply(store, SHIRT, SMALL, LARGE, STORE)) == cat.CatalogResult(0, 0, 4)
    log = changes(db_path)
    assert [(e["kind"], e["key"][0], e["key"][1]) for e in log] == [
        ("catalog.updated", "ITEM1", None),
        ("catalog.updated", "VAR1", None),
        ("catalog.updated", "VAR2", None),
        ("location.updated", None, "LOC1"),
    ]
    assert log[1]["old"] is None
    assert log[1]["new"]["sku"] == "SHIRT-S"
    assert log[2]["new"]["sku"] is None  # a variation without SKU is stored with SKU null


async def test_empty_texts_stay_empty_and_absent_ones_null(store: Store, db_path: Path) -> None:
    """Stored as sent: an empty name or unit stays '' and an absent one NULL (the inserts bind
    NULL through a sentinel), so the same objects again compare unchanged and log nothing."""
    blank = cat.ItemRow("ITEM2", "", False, 1, AT)
    odd = cat.VariationRow("VAR3", "ITEM2", "", None, None, "", False, False, 1, AT)
    bare = cat.VariationRow("VAR4", None, None, None, None, None, None, False, 1, AT)
    assert (await apply(store, blank, odd, bare)).changes == 3
    assert rows(db_path, "SELECT item_id, name FROM catalog_items") == [("ITEM2", "")]
    assert rows(
        db_path,
        "SELECT variation_id, item_id, name, sku, gtin, measurement_unit_id, track_inventory"
        " FROM catalog_variations ORDER BY variation_id",
    ) == [("VAR3", "ITEM2", "", None, None, "", 0), ("VAR4", None, None, None, None, None, None)]
    entry = rows(
        db_path, "SELECT location_id, state, job_id, old, sku FROM changes ORDER BY seq LIMIT 1"
    )
    assert entry == [(None, None, None, None, None)]
    assert (await apply(store, blank, odd, bare)) == cat.CatalogResult(0, 0, 3)
    assert catalog_tables(db_path) == replay_catalog(db_path)


async def test_rename_is_one_entry_and_versions_never_go_back(store: Store, db_path: Path) -> None:
    """A rename at a newer version is one entry with the old and new value; the older version
    arriving afterwards changes nothing; a version bump with no mirrored field changed updates the
    stored version and writes no entry."""
    await apply(store, SHIRT, SMALL)
    renamed = replace(SMALL, name="S", version=11)
    assert (await apply(store, renamed)).changes == 1
    assert (await apply(store, SMALL)) == cat.CatalogResult(0, 1, 0)
    assert (await apply(store, replace(renamed, version=12))) == cat.CatalogResult(0, 0, 1)
    last = changes(db_path)[-1]
    assert (last["old"]["name"], last["new"]["name"]) == ("Small", "S")
    assert rows(db_path, "SELECT name, version FROM catalog_variations") == [("S", 12)]
    assert len(changes(db_path)) == 3


async def test_deleted_objects_are_marked_not_forgotten(store: Store, db_path: Path) -> None:
    """A deletion is one ``catalog.deleted`` entry; the row stays, marked; a deletion of an
    object never seen is stored (marked) too, so the log still reproduces the table."""
    await apply(store, SHIRT, SMALL)
    gone = replace(SMALL, is_deleted=True, version=11)
    never = replace(LARGE, is_deleted=True)
    assert (await apply(store, gone, never)).changes == 2
    assert (await apply(store, gone)).changes == 0
    assert [e["kind"] for e in changes(db_path)[-2:]] == ["catalog.deleted", "catalog.deleted"]
    assert rows(db_path, "SELECT variation_id, is_deleted FROM catalog_variations") == [
        ("VAR1", 1),
        ("VAR2", 1),
    ]


async def test_the_inventory_view_answers_by_sku_and_location_name(
    store: Store, db_path: Path
) -> None:
    """``SELECT * FROM inventory WHERE sku = ?`` gives the counts with item, variation and
    location names; a count whose variation is not known yet joins as unknown (and is counted);
    the SKU lookup uses the indexes (no full scan of the counts)."""
    await apply(store, SHIRT, SMALL, STORE)
    counts = [
        InventoryCount(
            "VAR1", "LOC1", "IN_STOCK", "ITEM_VARIATION", "5", AT, Decimal(5), parse_ns(AT)
        ),
        InventoryCount(
            "VAR9", "LOC1", "IN_STOCK", "ITEM_VARIATION", "2", AT, Decimal(2), parse_ns(AT)
        ),
    ]

    async def write_counts(conn: Any) -> None:
        pass_id = await begin_pass(conn, "square", "full", AT)
        await apply_page(conn, "square", counts, pass_id=pass_id, recorded_at=AT)

    await store.write(write_counts)
    by_sku = rows(
        db_path,
        "SELECT sku, item_name, variation_name, location_name, quantity, unknown_variation"
        " FROM inventory WHERE sku = ?",
        "SHIRT-S",
    )
    assert by_sku == [("SHIRT-S", "Shirt", "Small", "Main Street", "5", 0)]
    by_name = rows(
        db_path,
        "SELECT catalog_object_id, unknown_variation FROM inventory WHERE location_name = ?"
        " ORDER BY catalog_object_id",
        "Main Street",
    )
    assert by_name == [("VAR1", 0), ("VAR9", 1)]
    assert await store.read(cat.unknown_variation_counts) == 1
    plan = " ".join(
        r[-1]
        for r in rows(db_path, "EXPLAIN QUERY PLAN SELECT * FROM inventory WHERE sku = ?", "x")
    )
    assert "catalog_variations_by_sku" in plan
    assert "inventory_counts_by_object (source=? AND catalog_object_id=?)" in plan


async def test_replaying_catalog_entries_reproduces_the_tables(store: Store, db_path: Path) -> None:
    """Applying each entry's ``new`` value in seq order gives exactly the stored items,
    variations and locations."""
    await apply(store, SHIRT, SMALL, LARGE, STORE)
    await apply(
        store,
        replace(SHIRT, name="T-Shirt", version=11),
        replace(LARGE, sku="SHIRT-L", version=11),
        replace(SMALL, is_deleted=True, version=12),
        replace(STORE, name="Main St."),
    )
    assert replay_catalog(db_path) == catalog_tables(db_path)


async def test_removing_a_source_logs_each_row_and_keeps_the_others(
    store: Store, db_path: Path
) -> None:
    """``remove_source`` (what ``syncd sources forget`` runs) deletes the source's items,
    variations, locations and catalog state, one ``*.removed`` entry per row (old: its value,
    new: null, a variation's SKU beside it), in chunks; another source's catalog stays, and a
    replay of the log still gives the tables."""
    await apply(store, SHIRT, SMALL, LARGE, STORE, source="north")
    await apply(store, SHIRT, SMALL, STORE, source="square")
    await store.write(
        lambda c: cat.save_state(c, cat.CatalogState("north", "2026-12-01T00:00:00Z", AT, AT, None))
    )
    head = changes(db_path)[-1]["seq"]

    removed = await store.write(lambda c: cat.remove_source(c, "north", recorded_at=AT, chunk=1))

    assert removed == 4
    entries = [e for e in changes(db_path) if e["seq"] > head]
    assert [(e["kind"], e["key"]) for e in entries] == [
        ("catalog.removed", ("ITEM1", None, None)),
        ("catalog.removed", ("VAR1", None, None)),
        ("catalog.removed", ("VAR2", None, None)),
        ("location.removed", (None, "LOC1", None)),
    ]
    assert rows(db_path, "SELECT sku FROM changes WHERE seq > ? ORDER BY seq", head) == [
        (None,),
        ("SHIRT-S",),
        (None,),
        (None,),
    ]
    assert {e["source"] for e in entries} == {"north"}
    assert all(e["new"] is None for e in entries)
    assert entries[1]["old"] == cat.variation_value(SMALL)
    assert entries[3]["old"] == STORE.value()
    for table in ("catalog_items", "catalog_variations", "locations", "catalog_state"):
        assert rows(db_path, f"SELECT COUNT(*) FROM {table} WHERE source = 'north'") == [(0,)]
    assert catalog_tables(db_path, "north") == {} == replay_catalog(db_path, "north")
    assert len(catalog_tables(db_path, "square")) == 3
    assert replay_catalog(db_path, "square") == catalog_tables(db_path, "square")
