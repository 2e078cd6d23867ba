"""Reading counts through the ``inventory`` view (syncd.store.inventory) and the stored catalog
figures (syncd.store.catalog: counts of unknown variations) on a real SQLite file: filters by SKU
and location name, pages in key order, unknown variations kept, every page an index range scan
(EXPLAIN QUERY PLAN), and the figures stored in order and read without touching the counts."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.model import InventoryCount
from syncd.store import Store, inventory
from syncd.store import catalog as cat
from syncd.store import sources as registry
from syncd.store.counts import apply_page
from syncd.store.inventory import InventoryFilter
from syncd.store.migrations import SCHEMA_VERSION
from syncd.store.queries import count_key
from syncd.store.sync_state import begin_pass
from syncd.timeutil import parse_ns
from tests.helpers import project_to_schema

AT = "2026-12-01T00:00:00Z"

SHIRT = cat.ItemRow("ITEM1", "Shirt", False, 10, AT)
MUG = cat.ItemRow("ITEM2", "Mug", False, 10, AT)
SMALL = cat.VariationRow("VAR1", "ITEM1", "Small", "SHIRT-S", None, None, True, False, 10, AT)
LARGE = cat.VariationRow("VAR2", "ITEM1", "Large", None, None, None, None, False, 10, AT)
PLAIN = cat.VariationRow("VAR3", "ITEM2", "Plain", "MUG", None, None, None, True, 10, AT)
# Two locations of "square" and one of "north" share the name "Main Street".
LOCATIONS = {
    "square": [
        cat.LocationRow("LOC1", "Main Street", "ACTIVE", "Europe/Berlin"),
        cat.LocationRow("LOC2", "Harbour", "ACTIVE", "Europe/Berlin"),
        cat.LocationRow("LOC3", "Main Street", "INACTIVE", "Europe/Berlin"),
    ],
    "north": [cat.LocationRow("LOC1", "Main Street", "ACTIVE", "Europe/Oslo")],
}
STATES = ("IN_STOCK", "WASTE")


def count(variation: str, location: str, quantity: int, state: str = "IN_STOCK") -> InventoryCount:
    return InventoryCount(
        variation, location, state, "ITEM_VARIATION", str(quantity), AT, Decimal(quantity),
        parse_ns(AT),
    )  # fmt: skip


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def plan(db: Path, sql: str, params: list[Any]) -> list[str]:
    return [str(r[-1]) for r in rows(db, "EXPLAIN QUERY PLAN " + sql, *params)]


async def write_catalog(store: Store, source: str, *objects: Any) -> None:
    items = [o for o in objects if isinstance(o, cat.ItemRow)]
    variations = [o for o in objects if isinstance(o, cat.VariationRow)]

    async def work(conn: Any) -> None:
        await cat.apply_items(conn, source, items, AT)
        await cat.apply_variations(conn, source, variations, AT)
        await cat.apply_locations(conn, source, LOCATIONS.get(source, []), AT)
        await cat.save_state(conn, cat.CatalogState(source, AT, AT, AT, None))

    await store.write(work)


async def write_counts(store: Store, source: str, counts: list[InventoryCount]) -> None:
    async def work(conn: Any) -> None:
        pass_id = await begin_pass(conn, source, "full", AT)
        await apply_page(conn, source, counts, pass_id=pass_id, recorded_at=AT)

    await store.write(work)


# VAR9 is a variation no catalog lists (yet); LOC9 a location not mirrored.
SQUARE_COUNTS = [
    count(v, loc, q, state)
    for q, (v, loc, state) in enumerate(
        (v, loc, state)
        for v in ("VAR1", "VAR2", "VAR3", "VAR9")
        for loc in ("LOC1", "LOC2", "LOC3", "LOC9")
        for state in STATES
    )
]
NORTH_COUNTS = [count("VAR1", "LOC1", 7), count("N1", "LOC1", 8)]


@pytest.fixture(name="filled")
async def fixture_filled(store: Store) -> Store:
    """Two sources: "square" with a catalog (one variation unknown), "north" with SKU "SHIRT-S"
    on its own VAR1 and an unknown N1."""
    await write_catalog(store, "square", SHIRT, MUG, SMALL, LARGE, PLAIN)
    await write_catalog(store, "north", SHIRT, SMALL)
    await write_counts(store, "square", SQUARE_COUNTS)
    await write_counts(store, "north", NORTH_COUNTS)
    return store


async def listing(store: Store, filt: InventoryFilter, page: int) -> list[dict[str, Any]]:
    """Every row of ``filt`` as `syncd counts` reads them: segment by segment, ``page`` rows a
    read, each page after the last row of the one before."""
    out: list[dict[str, Any]] = []
    for segment in await store.read(lambda conn: inventory.segments(conn, filt)):
        after = None
        while True:
            got = await store.read(
                lambda conn, s=segment, a=after: inventory.list_inventory(
                    conn, s, after=a, limit=page
                )
            )
            out.extend(got)
            if len(got) < page:
                break
            after = count_key(got[-1])
    return out


def keys(found: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [count_key(r) for r in found]


def view_keys(db: Path, where: str = "1", *params: Any) -> list[tuple[Any, ...]]:
    """The same rows asked of the view in one plain query, in key order."""
    return rows(
        db,
        f"SELECT source, location_id, catalog_object_id, state FROM inventory WHERE {where}"
        " ORDER BY source, location_id, catalog_object_id, state",
        *params,
    )


@pytest.mark.parametrize("page", [1, 3, 1000])
async def test_each_filter_lists_exactly_the_view_rows_in_key_order_in_pages_of_any_size(
    filled: Store, db_path: Path, page: int
) -> None:
    """Every filter and combination answers the rows a plain query of the view answers, in key
    order, whatever the page size (pages end exactly at a page boundary too)."""
    cases: list[tuple[InventoryFilter, str, tuple[Any, ...]]] = [
        (InventoryFilter(), "1", ()),
        (InventoryFilter(source="north"), "source = ?", ("north",)),
        (InventoryFilter(sku="SHIRT-S"), "sku = ?", ("SHIRT-S",)),
        (InventoryFilter(location_name="Main Street"), "location_name = ?", ("Main Street",)),
        (
            InventoryFilter(source="square", location_name="Main Street"),
            "source = ? AND location_name = ?",
            ("square", "Main Street"),
        ),
        (
            InventoryFilter(sku="SHIRT-S", location_name="Main Street"),
            "sku = ? AND location_name = ?",
            ("SHIRT-S", "Main Street"),
        ),
        (
            InventoryFilter(location_id="LOC3", location_name="Main Street"),
            "location_id = ? AND location_name = ?",
            ("LOC3", "Main Street"),
        ),
        (InventoryFilter(location_id="LOC1"), "location_id = ?", ("LOC1",)),
        (InventoryFilter(catalog_object_id="VAR9"), "catalog_object_id = ?", ("VAR9",)),
        (InventoryFilter(location_name="Nowhere"), "location_name = ?", ("Nowhere",)),
        (InventoryFilter(sku="NO-SUCH-SKU"), "sku = ?", ("NO-SUCH-SKU",)),
    ]
    for filt, where, params in cases:
        expected = view_keys(db_path, where, *params)
        assert keys(await listing(filled, filt, page)) == expected, filt
    # Sanity of the fixture: the filters above are not all empty.
    assert len(view_keys(db_path, "location_name = ?", "Main Street")) == 2 * 4 * 2 + 2
    assert len(view_keys(db_path, "sku = ?", "SHIRT-S")) == 4 * 2 + 1


async def test_rows_carry_names_and_unknown_variations_are_kept_as_unknown(
    filled: Store,
) -> None:
    """A row has the SKU, item, variation and location names; a count of a variation the catalog
    does not know is listed with its catalog columns None and ``unknown_variation`` True; a
    location not mirrored has no name; a deleted variation is marked."""
    got = {
        (r["catalog_object_id"], r["location_id"], r["state"]): r
        for r in await listing(filled, InventoryFilter(source="square"), 1000)
    }
    assert len(got) == len(SQUARE_COUNTS)
    small = got[("VAR1", "LOC1", "IN_STOCK")]
    assert (small["sku"], small["item_name"], small["variation_name"]) == (
        "SHIRT-S",
        "Shirt",
        "Small",
    )
    assert small["location_name"] == "Main Street"
    assert small["unknown_variation"] is False
    assert small["catalog_deleted"] is False
    unknown = got[("VAR9", "LOC2", "WASTE")]
    assert unknown["unknown_variation"] is True
    assert [unknown[c] for c in ("sku", "item_id", "item_name", "variation_name")] == [None] * 4
    assert unknown["location_name"] == "Harbour"
    assert got[("VAR1", "LOC9", "IN_STOCK")]["location_name"] is None
    assert got[("VAR2", "LOC1", "IN_STOCK")]["sku"] is None  # known, without a SKU
    assert got[("VAR3", "LOC1", "IN_STOCK")]["catalog_deleted"] is True
    assert sorted({k[0] for k, r in got.items() if r["unknown_variation"]}) == ["VAR9"]


async def test_a_location_name_becomes_its_locations_and_an_id_one_filter_per_source(
    filled: Store,
) -> None:
    """``segments`` resolves a name to every (source, location_id) so named, in key order, and a
    location id without a source to one filter per source that has counts."""
    named = await filled.read(
        lambda conn: inventory.segments(conn, InventoryFilter(location_name="Main Street"))
    )
    assert [(s.source, s.location_id) for s in named] == [
        ("north", "LOC1"),
        ("square", "LOC1"),
        ("square", "LOC3"),
    ]
    by_id = await filled.read(
        lambda conn: inventory.segments(conn, InventoryFilter(location_id="LOC2"))
    )
    assert [(s.source, s.location_id) for s in by_id] == [("north", "LOC2"), ("square", "LOC2")]
    assert await filled.read(inventory.sources) == ["north", "square"]


async def test_every_page_is_an_index_range_scan(filled: Store, db_path: Path) -> None:
    """The plan of each page `syncd counts` asks for: a range of the mirror's primary key or of
    ``inventory_counts_by_object`` after ``catalog_variations_by_sku``; never a scan of the
    counts and no sort except the few rows of one SKU. And the two documented one-line queries
    of the view (``WHERE sku = ?``, ``WHERE location_name = ?``) are index lookups too."""
    for filt in (
        InventoryFilter(source="square"),
        InventoryFilter(source="square", location_id="LOC1"),
        InventoryFilter(source="square", location_id="LOC1", location_name="Main Street"),
        InventoryFilter(source="square", catalog_object_id="VAR1"),
        InventoryFilter(sku="SHIRT-S"),
        InventoryFilter(sku="SHIRT-S", location_name="Main Street"),
    ):
        for after in (False, True):
            sql = inventory.page_sql(filt, after=after)
            params: list[Any] = [v for _, v in filt.equalities()]
            if after:
                params += ["x"] * len(inventory._open_key(filt))
            steps = plan(db_path, sql, [*params, 10])
            counts_step = next(s for s in steps if s.startswith(("SEARCH c ", "SCAN c")))
            assert counts_step.startswith("SEARCH c USING"), (filt, after, steps)
            if filt.sku is None:
                assert "TEMP B-TREE" not in " ".join(steps), (filt, after, steps)
            else:
                assert steps[0].startswith("SEARCH v USING INDEX catalog_variations_by_sku")
                # By the variation's key: its counts alone (through inventory_counts_by_object,
                # or the primary key when the location is known too).
                assert "source=? AND" in counts_step
                assert "catalog_object_id=?" in counts_step
            if after and filt.location_id is not None:
                assert "(catalog_object_id,state)>(?,?)" in counts_step, steps
    by_name = plan(db_path, "SELECT * FROM inventory WHERE location_name = ?", ["Main Street"])
    assert by_name[0] == "SEARCH l USING COVERING INDEX locations_by_name (name=?)"
    assert by_name[1] == "SEARCH c USING PRIMARY KEY (source=? AND location_id=?)"
    by_sku = plan(db_path, "SELECT * FROM inventory WHERE sku = ?", ["SHIRT-S"])
    assert by_sku[0] == "SEARCH v USING INDEX catalog_variations_by_sku (sku=?)"
    assert by_sku[1] == (
        "SEARCH c USING INDEX inventory_counts_by_object (source=? AND catalog_object_id=?)"
    )


async def test_figures_count_unknown_variations_and_are_stored_newest_first(
    filled: Store, db_path: Path
) -> None:
    """``count_figures`` counts the live variations and the counts no variation joins (as the
    view's ``unknown_variation``); ``save_figures`` keeps the figures of the later count when two
    finish out of order; a source whose catalog was never read has none."""
    figures = await filled.read(lambda conn: cat.count_figures(conn, "square"))
    [(unknown,)] = rows(
        db_path, "SELECT COUNT(*) FROM inventory WHERE source = 'square' AND unknown_variation"
    )
    assert figures == cat.CatalogFigures(variations=2, unknown_variations=unknown)
    assert unknown == 4 * 2  # VAR9 at 4 locations, 2 states
    assert await filled.read(cat.unknown_variation_counts) == unknown + 1  # north's N1
    late, early = "2026-12-02T00:00:00.000002Z", "2026-12-02T00:00:00.000001Z"
    assert await filled.write(lambda conn: cat.save_figures(conn, "square", figures, late))
    stale = cat.CatalogFigures(99, 99)
    assert not await filled.write(lambda conn: cat.save_figures(conn, "square", stale, early))
    over = await filled.read(cat.overview)
    assert over["square"] == {
        "latest_time": AT,
        "last_full_at": AT,
        "last_success_at": AT,
        "last_error": None,
        "locations": 3,
        "variations": 2,
        "unknown_variations": unknown,
        "unknown_checked_at": late,
    }
    assert over["north"]["unknown_variations"] is None  # not counted yet
    assert await filled.read(lambda conn: cat.count_figures(conn, "nowhere")) is None
    assert not await filled.write(lambda conn: cat.save_figures(conn, "nowhere", stale, late))


async def test_overview_leaves_out_a_forgotten_source(filled: Store) -> None:
    """A source forgotten (``syncd sources forget``: no counts, no ``sources`` row left) is not
    in the overview, though its catalog rows stay."""
    assert set(await filled.read(cat.overview)) == {"north", "square"}
    await filled.write(lambda conn: registry.forget(conn, "north", recorded_at=AT))
    assert set(await filled.read(cat.overview)) == {"square"}


async def test_a_schema_9_database_gets_its_figures_counted_by_the_migration(
    tmp_path: Path,
) -> None:
    """A database as schema 9 left it (catalog and counts, no figures): read-only, the overview
    reads the figures as None; the migration to 10 counts them once (the same figures as
    ``count_figures``), rewriting no change entry and no count."""
    written = await Store.open(tmp_path / "written.db")
    try:
        await write_catalog(written, "square", SHIRT, MUG, SMALL, LARGE, PLAIN)
        await write_counts(written, "square", SQUARE_COUNTS)
    finally:
        await written.aclose()
    old = tmp_path / "old.db"
    await project_to_schema(tmp_path / "written.db", old, 9)
    assert rows(old, "PRAGMA user_version") == [(9,)]
    reader = await Store.open(old, readonly=True)
    try:
        before = (await reader.read(cat.overview))["square"]
    finally:
        await reader.aclose()
    assert before["latest_time"] == AT
    assert (before["variations"], before["unknown_variations"]) == (None, None)
    log_before = rows(old, "SELECT * FROM changes ORDER BY seq")
    mirror_before = rows(old, "SELECT * FROM inventory_counts ORDER BY 1, 2, 3, 4")

    migrated = await Store.open(old)
    try:
        after = (await migrated.read(cat.overview))["square"]
        live = await migrated.read(lambda conn: cat.count_figures(conn, "square"))
    finally:
        await migrated.aclose()
    assert rows(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert live == cat.CatalogFigures(variations=2, unknown_variations=8)
    assert (after["variations"], after["unknown_variations"]) == (2, 8)
    parse_ns(after["unknown_checked_at"])
    assert len(after["unknown_checked_at"]) == len("2026-12-01T00:00:00.000000Z")
    assert rows(old, "SELECT * FROM changes ORDER BY seq") == log_before
    assert rows(old, "SELECT * FROM inventory_counts ORDER BY 1, 2, 3, 4") == mirror_before
