"""syncd.store.readonly: the store's query functions run on a plain read-only sqlite3 connection,
without an event loop, give what they give through ``Store.read``; and the status figures read from
indexes (entries from the kept range, rows per source) match counting every row, before and after
retention prunes the front of the log."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from syncd.errors import StoreError
from syncd.store import Store, catalog, inventory, queries, retention
from syncd.store import counts as counts_store
from syncd.store.inline import QuerySuspended
from syncd.store.inventory import InventoryFilter
from syncd.store.readonly import ReadOnly
from tests.helpers import count

AT = "2026-01-01T00:00:00Z"


async def _fill(store: Store) -> None:
    """Two sources, the second written twice (so it has updates in the log)."""
    rows = {
        "acme": [count(f"ITEM{i}", "L1", str(i)) for i in range(5)],
        "bobs": [count(f"ITEM{i}", f"L{i % 2}", "1") for i in range(3)],
    }
    for pass_id, (source, page) in enumerate(rows.items(), start=1):
        await store.write(
            partial(
                counts_store.apply_page, source=source, counts=page, pass_id=pass_id, recorded_at=AT
            )
        )
    again = [count("ITEM0", "L0", "7")]
    await store.write(
        partial(counts_store.apply_page, source="bobs", counts=again, pass_id=3, recorded_at=AT)
    )
    state = catalog.CatalogState("acme", AT, AT, AT, None)
    await store.write(partial(catalog.save_state, state=state))


QUERIES: list[Any] = [
    queries.status,
    queries.service_state,
    queries.sources_overview,
    queries.counts_by_source,
    catalog.overview,
    inventory.has_view,
    partial(inventory.segments, filt=InventoryFilter(location_id="L1")),
    partial(inventory.list_inventory, filt=InventoryFilter(source="acme"), after=None, limit=3),
]


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: getattr(q, "__name__", None) or q.func.__name__
)
async def test_a_query_reads_the_same_without_a_loop(db_path: Path, query: Any) -> None:
    store = await Store.open(db_path)
    try:
        await _fill(store)
        through_store = await store.read(query)
    finally:
        await store.aclose()
    # In a thread: this test runs inside an event loop, and ReadOnly needs none.
    without_loop = await asyncio.to_thread(_read, db_path, query)
    assert without_loop == through_store
    assert without_loop not in (None, [], {})


def _read(path: Path, query: Any) -> Any:
    with ReadOnly.open(path) as db:
        return db.read(query)


async def test_status_figures_match_counting_every_row(db_path: Path) -> None:
    """Entries = the kept range's length, rows per source by index, before and after pruning."""
    store = await Store.open(db_path)
    try:
        await _fill(store)
        for prune in (False, True):
            if prune:
                pruned = await store.write(
                    partial(retention.prune_batch, cutoff=None, max_rows=4, batch=100)
                )
                assert pruned > 0
            status = await store.read(queries.status)
            overview = await store.read(queries.sources_overview)
            conn = sqlite3.connect(db_path)
            try:
                entries = conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
                per_source = dict(
                    conn.execute("SELECT source, COUNT(*) FROM inventory_counts GROUP BY source")
                )
            finally:
                conn.close()
            assert status["changes"]["entries"] == entries == (4 if prune else 9)
            assert (
                {s: o["counts"] for s, o in overview.items()}
                == per_source
                == {"acme": 5, "bobs": 3}
            )
            assert status["counts"] == 8
    finally:
        await store.aclose()


def test_an_empty_database_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"

    async def create() -> None:
        await (await Store.open(path)).aclose()

    asyncio.run(create())
    with ReadOnly.open(path) as db:
        status = db.read(queries.status)
        assert status["changes"] == {"entries": 0, "head_seq": 0, "oldest_seq": None}
        assert status["counts"] == 0
        assert db.read(queries.counts_by_source) == {}


def test_a_missing_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as exc:
        ReadOnly.open(tmp_path / "nothing-here.db")
    assert exc.value.op == "store.open_ro"
    assert not (tmp_path / "nothing-here.db").exists()  # read-only: never created


def test_a_query_that_waits_on_anything_else_is_refused(tmp_path: Path) -> None:
    """A query that awaits anything but its connection raises instead of hanging or half-running."""
    path = tmp_path / "syncd.db"
    sqlite3.connect(path).close()

    async def sleeps(conn: Any) -> int:
        await asyncio.sleep(0)
        return 1

    with ReadOnly.open(path) as db:
        with pytest.raises(QuerySuspended):
            db.read(sleeps)
        assert db.read(inventory.has_view) is False  # the connection is still usable


def test_the_connection_is_read_only(db_path: Path) -> None:
    async def create() -> None:
        await (await Store.open(db_path)).aclose()

    asyncio.run(create())

    async def writes(conn: Any) -> None:
        await conn.execute("DELETE FROM inventory_counts")

    with ReadOnly.open(db_path) as db, pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.read(writes)
