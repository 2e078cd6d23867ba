"""A full catalog pass into an empty mirror (the first sync) looks up only what it applied itself:
the same entries, versions and rows as a lookup of every object would give, an object repeated on
later pages included; a full pass into a mirror that holds the source's catalog looks up all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.model import CatalogItem, CatalogPage, CatalogVariation
from syncd.store import Store
from syncd.store import catalog as cat
from syncd.sync.catalog import CatalogEngine, CatalogOptions
from syncd.timeutil import parse_ns
from tests.helpers import catalog_tables, changes, replay_catalog

SOURCE = "square"
AT = "2026-12-01T00:00:00Z"
LATEST = "2026-12-01T00:00:10Z"


def item(item_id: str, name: str, version: int) -> CatalogItem:
    return CatalogItem(item_id, name, False, version, AT, parse_ns(AT))


def variation(
    variation_id: str, name: str, version: int, sku: str | None = None
) -> CatalogVariation:
    return CatalogVariation(
        variation_id, "I1", name, sku, None, None, True, False, version, AT, parse_ns(AT)
    )


class Pages:
    """A catalog source serving the same pages for every chain."""

    def __init__(self, pages: list[tuple[CatalogItem | CatalogVariation, ...]]) -> None:
        self.pages = pages

    async def search_catalog(
        self, *, begin_time: str | None, cursor: str | None, limit: int | None = None
    ) -> CatalogPage:
        at = 0 if cursor is None else int(cursor)
        more = at + 1 < len(self.pages)
        return CatalogPage(self.pages[at], str(at + 1) if more else None, LATEST)


def engine(store: Store, pages: Pages, batch: int) -> CatalogEngine:
    return CatalogEngine(store, pages, CatalogOptions(SOURCE, full_batch_objects=batch))


def entries(db_path: Path) -> list[tuple[str, Any, Any]]:
    return [(e["key"][0], e["old"], e["new"]) for e in changes(db_path)]


PAGES = [
    (item("I1", "Shirt", 1), variation("V1", "Small", 1, "S-1"), variation("V2", "Large", 1)),
    (variation("V1", "Small!", 2, "S-1"), variation("V3", "Tiny", 1)),  # V1 again, newer
    (variation("V2", "Large?", 0), item("I1", "Shirt", 1)),  # older, then the same again
]


async def test_a_first_sync_logs_each_change_once_with_repeats_on_later_pages(
    db_path: Path,
) -> None:
    # Batches of 1 object: every page in a write of its own; 100: all pages in one write.
    for batch in (1, 100):
        path = db_path.with_name(f"batch{batch}.db")
        fresh = await Store.open(path)
        try:
            summary = await engine(fresh, Pages(PAGES), batch).run_pass(full=True)
        finally:
            await fresh.aclose()
        assert summary.ok, summary.error
        logged = entries(path)
        assert [(oid, old is None) for oid, old, _ in logged] == [
            ("I1", True),
            ("V1", True),
            ("V2", True),
            ("V1", False),
            ("V3", True),
        ], batch
        assert logged[3][1]["name"] == "Small"
        assert logged[3][2]["name"] == "Small!"
        tables = catalog_tables(path)
        assert tables == replay_catalog(path)
        assert tables[("catalog", "V1")]["name"] == "Small!"
        assert tables[("catalog", "V2")]["name"] == "Large"


async def test_a_full_pass_into_a_mirror_holding_the_catalog_looks_up_every_object(
    store: Store, db_path: Path
) -> None:
    async def seed(conn: Any) -> None:
        await cat.apply_variations(conn, SOURCE, [variation("V2", "Large", 5)], AT)

    await store.write(seed)
    summary = await engine(store, Pages(PAGES), 100).run_pass(full=True)
    assert summary.ok, summary.error
    logged = entries(db_path)
    # V2 was stored at version 5: the pass's version 1 and 0 are older and change nothing.
    assert [oid for oid, _, _ in logged] == ["V2", "I1", "V1", "V1", "V3"]
    assert catalog_tables(db_path) == replay_catalog(db_path)
