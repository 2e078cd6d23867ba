"""What `syncd status` and `syncd counts` pay for the catalog (issue 12), on a mirror of --counts
counts and a catalog that knows 90% of their variations, each figure beside its baseline measured
in the same run (median of --reps):

- counting the counts of unknown variations: the anti-join (probe the catalog for every count, the
  obvious query) beside what the passes run (``count_figures``: all counts minus those that join a
  variation), and the stored figures `syncd status` reads instead (``catalog.overview``);
- one page of a location's counts by name, 1,000 rows deep into it: one query of the view ordered
  by key (SQLite sorts the location for every page) beside the page `syncd counts --location-name`
  asks for (the location resolved first, a range of the primary key).

Usage: ``python bench/catalog_figures.py [--counts 1000000] [--reps 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import make_counts_db
from syncd.store import Store, inventory
from syncd.store import catalog as catalog_store
from syncd.store.inventory import InventoryFilter

OBJECTS = 200_000  # make_counts_db: 200,000 objects per location
ANTI_JOIN = (
    "SELECT COUNT(*) FROM inventory_counts AS c WHERE c.source = 'square' AND NOT EXISTS"
    " (SELECT 1 FROM catalog_variations AS v WHERE v.source = c.source"
    " AND v.variation_id = c.catalog_object_id)"
)


def add_catalog(path: Path, counts: int) -> None:
    """Variations for 9 of every 10 objects, their items, the locations, and a catalog_state row."""
    conn = sqlite3.connect(path)
    objects = min(counts, OBJECTS)
    conn.executemany(
        "INSERT INTO catalog_variations (source, variation_id, item_id, name, sku, version,"
        " updated_at, seq) VALUES ('square', ?, ?, 'Regular', ?, 1, '2026-01-01T00:00:00Z', 0)",
        ((f"ITEM{i:07d}", f"I{i // 3}", f"SKU{i}") for i in range(objects) if i % 10),
    )
    conn.executemany(
        "INSERT INTO catalog_items (source, item_id, name, version, updated_at, seq)"
        " VALUES ('square', ?, 'Item', 1, '2026-01-01T00:00:00Z', 0)",
        ((f"I{i}",) for i in range(objects // 3 + 1)),
    )
    conn.executemany(
        "INSERT INTO locations (source, location_id, name, seq) VALUES ('square', ?, ?, 0)",
        ((f"LOC{i}", f"Store {i}") for i in range(counts // OBJECTS + 1)),
    )
    conn.execute("INSERT INTO catalog_state (source, latest_time) VALUES ('square', NULL)")
    conn.commit()
    conn.close()


async def median_ms(reps: int, run: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = await run()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


async def scalar(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    async with conn.execute(sql, params) as cur:
        return await cur.fetchall()


async def measure(path: Path, reps: int) -> list[tuple[str, float, str]]:
    store = await Store.open(path, readonly=True)
    try:
        rows: list[tuple[str, float, str]] = []

        def read(fn: Callable[[Any], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
            return lambda: store.read(fn)

        ms, found = await median_ms(reps, read(lambda c: scalar(c, ANTI_JOIN)))
        rows.append(("unknown counts: anti-join (baseline)", ms, f"{found[0][0]} unknown"))
        ms, figures = await median_ms(
            reps, read(lambda c: catalog_store.count_figures(c, "square"))
        )
        rows.append(("unknown counts: count_figures (passes)", ms, str(figures)))
        ms, _ = await median_ms(reps, read(catalog_store.overview))
        rows.append(("stored figures: overview (status)", ms, ""))

        name = "Store 0"
        naive = inventory.page_sql(InventoryFilter(location_name=name), after=True)
        after = ("square", "LOC0", "ITEM0001000", "IN_STOCK")
        ms, got = await median_ms(reps, read(lambda c: scalar(c, naive, (name, *after, 1000))))
        rows.append(("location page: ORDER BY key (baseline)", ms, f"{len(got)} rows"))
        segment = InventoryFilter(source="square", location_id="LOC0", location_name=name)

        async def resolved(conn: Any) -> list[dict[str, Any]]:
            await inventory.locations_named(conn, name)
            return await inventory.list_inventory(conn, segment, after=after, limit=1000)

        ms, got = await median_ms(reps, read(resolved))
        rows.append(("location page: resolved (syncd counts)", ms, f"{len(got)} rows"))
        return rows
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        make_counts_db(path, args.counts)
        add_catalog(path, args.counts)
        print(f"database: {args.counts:,} counts, built in {time.perf_counter() - t0:.1f} s")
        for label, ms, note in asyncio.run(measure(path, args.reps)):
            print(f"{label:<42} {ms:9.1f} ms  {note}")


if __name__ == "__main__":
    main()
